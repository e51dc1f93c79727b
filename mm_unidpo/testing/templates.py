"""Chat templates of the tiny tokenizers (tokenizer.py): each mimics its model's real template, as far as
the tests need (roles, image placeholders, end-of-turn tokens); a comment names the template it copies."""

from __future__ import annotations

TEXT = (
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}{%- if part['type'] == 'text' %}"
    "{{- part['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    + TEXT.replace("{{- message['content'] }}", "{{- message['content'] | trim }}").replace(
        "{{- part['text'] }}", "{{- part['text'] | trim }}"
    )
    + "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

# llava-hf/llava-1.5: images first ("<image>\n" each), then text; the real template does not
# close assistant turns, ours closes them with eos "</s>" (as LLaVA was trained).
LLAVA = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}" + TEXT + "{{- ' ' }}"
    "{%- else %}{{- message['role'].upper() + ': ' }}"
    "{%- if message['content'] is not string %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{{- '<image>\n' }}{%- endif %}{%- endfor %}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% generation %}" + TEXT + "{{- eos_token }}{% endgeneration %}"
    "{%- else %}" + TEXT + "{{- ' ' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'ASSISTANT:' }}{%- endif %}"
)

# llava-hf/llava-v1.6-mistral: "[INST] <image>\nq [/INST] a</s>" (the real one has the "<\\s>" typo).
MISTRAL = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '<<SYS>>\n' }}" + TEXT + "{{- '\n<</SYS>>\n\n' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST] ' }}"
    "{%- if message['content'] is not string %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{{- '<image>\n' }}{%- endif %}{%- endfor %}"
    "{%- endif %}" + TEXT + "{{- ' [/INST]' }}"
    "{%- else %}{{- ' ' }}" + TEXT + "{{- eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

# llava-hf/llava-onevision-qwen2: "<|im_start|>user <image>\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
# (the real one renders past assistant turns as "assistant \n", unlike its generation prompt; ours
# keeps "prompt + response" a prefix-consistent rendering).
CHATML_LLAVA = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] }}"
    "{%- if message['role'] != 'assistant' %}{{- ' ' }}{%- endif %}"
    "{%- if message['content'] is not string %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{{- '<image>' }}{%- endif %}{%- endfor %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'video' %}{{- '<video>' }}{%- endif %}{%- endfor %}"
    "{%- endif %}"
    "{{- '\n' }}" + TEXT + "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

QWEN_PARTS = (
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
)

QWEN2_VL = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}" + QWEN_PARTS + "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

QWEN3_VL = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}" + QWEN_PARTS + "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# llava.conversation.conv_vicuna_v1 (sep=" ", sep2="</s>"), the LLaVA-1.5 training format.
VICUNA = (
    "{%- if messages[0]['role'] == 'system' %}{%- set message = messages[0] %}" + TEXT + "{{- ' ' }}"
    '{%- else %}{{- "A chat between a curious user and an artificial intelligence assistant. '
    "The assistant gives helpful, detailed, and polite answers to the user's questions. \" }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- 'USER: ' }}"
    "{%- if message['content'] is not string %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{{- '<image>\n' }}{%- endif %}{%- endfor %}"
    "{%- endif %}" + TEXT + "{{- ' ' }}"
    "{%- elif message['role'] == 'assistant' %}{{- 'ASSISTANT: ' }}" + TEXT + "{{- eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'ASSISTANT:' }}{%- endif %}"
)

# google/gemma-3-*-it: "<bos><start_of_turn>user\n{system}\n\n<start_of_image>q<end_of_turn>\n<start_of_turn>model\n
# a<end_of_turn>\n"; text parts trimmed, the system prompt prefixed to the first user turn, "assistant" -> "model".
GEMMA3_PARTS = (
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<start_of_image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
)
GEMMA3 = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{%- else %}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{%- endif %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    + GEMMA3_PARTS
    + "{{- '<end_of_turn>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}"
)
GEMMA4 = GEMMA3.replace("<start_of_image>", "<|image|>")


# Idefics3 / SmolVLM: "User:<image>q<end_of_utterance>\nAssistant: a<end_of_utterance>\n", the role capitalised
# and followed by ":" when the content starts with an image, ": " otherwise; the generation prompt "Assistant:".
def idefics3_template(opening: str) -> str:
    return (
        "{{- '" + opening + "' }}"
        "{%- for message in messages %}{{- message['role'] | capitalize }}"
        "{%- if message['content'] is string %}{{- ': ' + message['content'] }}"
        "{%- else %}{%- if message['content'][0]['type'] == 'image' %}{{- ':' }}{%- else %}{{- ': ' }}{%- endif %}"
        "{%- for part in message['content'] %}{%- if part['type'] == 'text' %}{{- part['text'] }}"
        "{%- elif part['type'] == 'image' %}{{- '<image>' }}{%- endif %}{%- endfor %}{%- endif %}"
        "{{- '<end_of_utterance>\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'Assistant:' }}{%- endif %}"
    )


# OpenGVLab/InternVL3-*-hf: "<|im_start|>user\n<IMG_CONTEXT>\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n".
INTERNVL = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<IMG_CONTEXT>\n' }}"
    "{%- elif part['type'] == 'video' %}{{- '<video>\n' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# zai-org/GLM-4.1V-9B-Thinking: "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>q<|assistant|>\na".
GLM4V = (
    "{{- '[gMASK]<sop>' }}"
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|begin_of_image|><|image|><|end_of_image|>' }}"
    "{%- elif part['type'] == 'video' %}{{- '<|begin_of_video|><|video|><|end_of_video|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- endif %}"
)

# meta-llama/Llama-3.2-*-Vision-Instruct:
# "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>q<|eot_id|>
# <|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>" (text trimmed).
MLLAMA = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

# the image tokens Idefics3 / SmolVLM processors expand "<image>" into (tile positions, the global view)

# CohereLabs/aya-vision-*: "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|><image>q<|END_OF_TURN_TOKEN|>
# <|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>a<|END_OF_TURN_TOKEN|>" (the real one's default system preamble left out).
AYA_VISION = (
    "{{- bos_token }}"
    "{%- for message in messages %}{{- '<|START_OF_TURN_TOKEN|>' }}"
    "{%- if message['role'] == 'user' %}{{- '<|USER_TOKEN|>' }}"
    "{%- elif message['role'] == 'assistant' %}{{- '<|CHATBOT_TOKEN|>' }}"
    "{%- else %}{{- '<|SYSTEM_TOKEN|>' }}{%- endif %}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|END_OF_TURN_TOKEN|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{%- endif %}"
)

# deepseek-community/deepseek-vl-*-chat: "System text\n\nUser: <image_placeholder>q\n\nAssistant: a\n\n" -- like the
# real one, an assistant turn is closed by "\n\n", not by a token (its seps[i % 2] never reaches the EOS: Jinja
# resets `i` in every loop pass); the generation prompt is "Assistant:".
DEEPSEEK_VL = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- 'User: ' }}"
    "{%- elif message['role'] == 'assistant' %}{{- 'Assistant: ' }}{%- endif %}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<image_placeholder>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '\n\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'Assistant:' }}{%- endif %}"
)
