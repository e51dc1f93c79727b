"""Offline tiny tokenizers for tests.

A small byte-level BPE is trained with the ``tokenizers`` library on a built-in
English corpus (deterministic, no network).  The trained base vocabulary is
cached once per process; :func:`tiny_tokenizer` then wraps a copy of it as a
``PreTrainedTokenizerFast`` with the special tokens and a Jinja chat template
shaped like the real one of each model family:

==================  ===========================================================
style               modelled on
==================  ===========================================================
``llama3``          Llama-3.x-Instruct (``<|begin_of_text|>`` added by the
                    tokenizer *and* written by the template, like the real one)
``llava``           llava-hf/llava-1.5 (``USER: <image>\\n... ASSISTANT: ...``)
``mistral``         llava-hf/llava-v1.6-mistral (``[INST] ... [/INST] ...``)
``chatml_llava``    llava-hf/llava-onevision-qwen2 (``<|im_start|>user <image>\\n...``)
``qwen2_vl``        Qwen2-VL / Qwen2.5-VL (ChatML, default system prompt,
                    ``<|vision_start|><|image_pad|><|vision_end|>``)
``qwen3_vl``        Qwen3-VL-Instruct (as ``qwen2_vl`` without default system)
``vicuna``          original LLaVA-1.5 ``conv_vicuna_v1`` (``USER: ... ASSISTANT: ...</s>``)
``gemma3``          google/gemma-3-*-it (``<start_of_turn>user\n...<end_of_turn>``, turn
                    "model", the system prompt folded into the first user turn,
                    ``<start_of_image>`` per image; ``<bos>`` added by the tokenizer
                    *and* written by the template, like the real one)
``idefics3``        HuggingFaceM4/Idefics3-8B-Llama3 (``<|begin_of_text|>User:<image>q
                    <end_of_utterance>\nAssistant: a<end_of_utterance>\n``; Llama-3
                    specials, BOS added by the tokenizer and written by the template)
``smolvlm``         HuggingFaceTB/SmolVLM2-*-Instruct (as ``idefics3``, opened by
                    ``<|im_start|>``, SmolLM2 specials, no BOS added)
``internvl``        OpenGVLab/InternVL3-*-hf (ChatML, ``<IMG_CONTEXT>\n`` per image
                    before the text, no default system prompt)
``glm4v``           zai-org/GLM-4.1V-9B-Thinking (``[gMASK]<sop><|user|>\n...
                    <|assistant|>\n...``; like the real one, an assistant turn is
                    not closed by a token: the model ends it with ``<|endoftext|>``
                    or the next ``<|user|>``)
``gemma4``          google/gemma-4-*-it, as far as known here: Gemma-3's turns, one
                    ``<|image|>`` per image (expanded by the processor between
                    ``<start_of_image>`` and ``<end_of_image>``); audio tokens named
                    but unused (the real template was not available offline)
``mllama``          meta-llama/Llama-3.2-*-Vision-Instruct (Llama-3 headers, ``<|image|>``
                    per image; the real template's dated system block for prompts
                    without images is left out)
``aya_vision``      CohereLabs/aya-vision-* (Cohere turns, ``<image>`` per image)
``deepseek_vl``     deepseek-community/deepseek-vl-*-chat (``User: ... Assistant: a\n\n``:
                    no end-of-turn token, the EOS comes after the turn)
==================  ===========================================================

Every template ends assistant turns with the family's end-of-turn token (which
is also the tokenizer's ``eos_token``), accepts ``content`` as a string or as a
list of ``{"type": "text"|"image"|"video"}`` parts, and supports
``add_generation_prompt``.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from . import templates as T

__all__ = ["BASE_VOCAB_SIZE", "STYLES", "base_tokenizer_json", "tiny_tokenizer"]

BASE_VOCAB_SIZE = 600  # 256 byte symbols + merges; special tokens come on top

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A picture is worth a thousand words.
What is shown in this image? The image shows a person standing next to a rocket.
Describe the photo in detail. There is a horse in a green field under a blue sky.
An astronaut in a white space suit is smiling at the camera. A man holds a camera.
The cat is sleeping on the sofa. Two dogs are playing with a red ball in the park.
Question: How many people are in the picture? Answer: There are two people.
Please answer the question with a single word or phrase. Yes. No. Left. Right.
The answer is correct because the object on the left is larger than the one on the right.
I think the image is a photograph of a city street at night, with cars and lights.
You are a helpful assistant. The user asks a question and the assistant answers it.
Let us think step by step. First, we count the objects. Then we compare their colors.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 2024. Colors: red, green, blue, yellow, black.
The model prefers the chosen response over the rejected response. Reward, loss, margin.
A small boat sails on the calm water near the mountains. The sun is setting in the west.
This is a chart that shows the sales of the company over the last five years.
The text in the image says: "Welcome to the museum". The sign is written in English.
She is wearing a black hat and a long coat. He is reading a book in the library.
"""

STYLES = (
    "llama3",
    "llava",
    "mistral",
    "chatml_llava",
    "qwen2_vl",
    "qwen3_vl",
    "vicuna",
    "gemma3",
    "idefics3",
    "smolvlm",
    "internvl",
    "glm4v",
    "mllama",
    "gemma4",
    "aya_vision",
    "deepseek_vl",
)


@functools.cache
def base_tokenizer_json(corpus: str | None = None) -> str:
    """Train the byte-level BPE (once per process and corpus) and return it serialized.

    ``corpus`` (optional text, one example per line) is trained on together with the built-in corpus
    and weighted up, so that its words become whole tokens; the vocabulary size stays
    ``BASE_VOCAB_SIZE``, so special-token ids are the same as without it and a tiny model built for
    the default tokenizer fits this one too.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    lines = _CORPUS.splitlines() * 3
    if corpus:
        lines = [line for line in corpus.splitlines() if line.strip()] * 20 + lines
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    if tok.get_vocab_size() != BASE_VOCAB_SIZE:
        raise ValueError(
            f"the BPE vocabulary has {tok.get_vocab_size()} tokens, not {BASE_VOCAB_SIZE}: special-token ids would move"
        )
    return tok.to_str()


# ---------------------------------------------------------------------------------------------
# Special tokens and roles per style; the chat templates (Jinja) are in templates.py.
_IDEFICS3_IMAGE_SPECIALS = (
    ["<fake_token_around_image>", "<image>", "<global-img>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    + ["<end_of_utterance>"]
)
_IDEFICS3_EXTRA = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}

_LLAMA2_SPECIALS = dict(bos="<s>", eos="</s>", unk="<unk>")
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# style -> (chat template, special tokens in id order, token roles, extra named tokens, add-bos?)
_SPECS: dict[str, dict] = {
    "llama3": dict(
        template=T.LLAMA3,
        specials=[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ],
        roles=dict(bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>"),
        extra={},
        add_bos=True,
    ),
    "llava": dict(
        template=T.LLAVA,
        specials=["<unk>", "<s>", "</s>", "<image>", "<pad>"],
        roles=dict(_LLAMA2_SPECIALS, pad="<pad>"),
        extra={"image_token": "<image>"},
        add_bos=True,
    ),
    "mistral": dict(
        template=T.MISTRAL,
        specials=["<unk>", "<s>", "</s>", "<image>", "<pad>"],
        roles=dict(_LLAMA2_SPECIALS, pad="<pad>"),
        extra={"image_token": "<image>"},
        add_bos=True,
    ),
    "chatml_llava": dict(
        template=T.CHATML_LLAVA,
        specials=[*_QWEN_SPECIALS, "<image>", "<video>"],
        roles=dict(eos="<|im_end|>", pad="<|endoftext|>"),
        extra={"image_token": "<image>", "video_token": "<video>"},
        add_bos=False,
    ),
    "qwen2_vl": dict(
        template=T.QWEN2_VL,
        specials=[*_QWEN_SPECIALS, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
        roles=dict(eos="<|im_end|>", pad="<|endoftext|>"),
        extra={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        add_bos=False,
    ),
    "vicuna": dict(
        template=T.VICUNA,
        specials=["<unk>", "<s>", "</s>"],
        # LLaVA's train.py sets pad_token = unk_token for the v1 (vicuna) conversation format.
        roles=dict(_LLAMA2_SPECIALS, pad="<unk>"),
        extra={},
        add_bos=True,
    ),
    "gemma3": dict(
        template=T.GEMMA3,
        specials=[
            "<pad>",
            "<eos>",
            "<bos>",
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],
        # the real tokenizer's eos is <eos>, its generation config's [<eos>, <end_of_turn>]; here (as for every
        # style) the end-of-turn token is the eos
        roles=dict(bos="<bos>", eos="<end_of_turn>", pad="<pad>"),
        extra={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
        add_bos=True,
    ),
    "idefics3": dict(
        template=T.idefics3_template("<|begin_of_text|>"),
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", *_IDEFICS3_IMAGE_SPECIALS],
        roles=dict(bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<|finetune_right_pad_id|>"),
        extra=_IDEFICS3_EXTRA,
        add_bos=True,
    ),
    "smolvlm": dict(
        template=T.idefics3_template("<|im_start|>"),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IDEFICS3_IMAGE_SPECIALS],
        roles=dict(bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>"),
        extra=_IDEFICS3_EXTRA,
        add_bos=False,
    ),
    "internvl": dict(
        template=T.INTERNVL,
        specials=[*_QWEN_SPECIALS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        roles=dict(eos="<|im_end|>", pad="<|endoftext|>"),
        extra={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        add_bos=False,
    ),
    "glm4v": dict(
        template=T.GLM4V,
        specials=[
            "<|endoftext|>",
            "[MASK]",
            "[gMASK]",
            "[sMASK]",
            "<sop>",
            "<eop>",
            "<|system|>",
            "<|user|>",
            "<|assistant|>",
            "<|observation|>",
            "<|begin_of_image|>",
            "<|end_of_image|>",
            "<|begin_of_video|>",
            "<|end_of_video|>",
            "<|image|>",
            "<|video|>",
        ],
        roles=dict(eos="<|endoftext|>", pad="<|endoftext|>"),
        extra={"image_token": "<|image|>", "video_token": "<|video|>"},
        add_bos=False,
    ),
    "mllama": dict(
        template=T.MLLAMA,
        specials=[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
            "<|python_tag|>",
            "<|image|>",
        ],
        roles=dict(bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>"),
        extra={"image_token": "<|image|>"},
        add_bos=True,
    ),
}
_SPECS["aya_vision"] = dict(
    template=T.AYA_VISION,
    specials=[
        "<PAD>",
        "<BOS_TOKEN>",
        "<EOS_TOKEN>",
        "<|START_OF_TURN_TOKEN|>",
        "<|END_OF_TURN_TOKEN|>",
        "<|USER_TOKEN|>",
        "<|CHATBOT_TOKEN|>",
        "<|SYSTEM_TOKEN|>",
        "<image>",
        "<|START_OF_IMG|>",
        "<|END_OF_IMG|>",
        "<|IMG_PATCH|>",
        "<|IMG_LINE_BREAK|>",
        "TILE",
        "TILE_GLOBAL",
    ],
    roles=dict(bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>"),
    extra={"image_token": "<image>"},
    add_bos=True,
)
_SPECS["deepseek_vl"] = dict(
    template=T.DEEPSEEK_VL,
    specials=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<image_placeholder>", "<pad>"],
    roles=dict(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<pad>"),
    extra={"image_token": "<image_placeholder>"},
    add_bos=True,
)
_SPECS["qwen3_vl"] = dict(_SPECS["qwen2_vl"], template=T.QWEN3_VL)
_SPECS["gemma4"] = dict(
    _SPECS["gemma3"],
    template=T.GEMMA4,
    specials=_SPECS["gemma3"]["specials"] + ["<|image|>", "<start_of_audio>", "<end_of_audio>", "<|audio|>"],
    extra={
        "image_token": "<|image|>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "audio_token": "<|audio|>",
        "boa_token": "<start_of_audio>",
        "eoa_token": "<end_of_audio>",
    },
)


def tiny_tokenizer(style: str, model_max_length: int = 2048, padding_side: str = "right", corpus: str | None = None):
    """Build a ``PreTrainedTokenizerFast`` for one chat-template ``style`` (see module doc).

    ``corpus``: extra training text whose words should be single tokens (see :func:`base_tokenizer_json`);
    special-token ids do not change with it.

    Special tokens get ids after the ``BASE_VOCAB_SIZE`` BPE ids, in the listed order; roles
    (``bos_token`` / ``eos_token`` / ``pad_token`` / ``unk_token``) and named extra tokens
    (``tokenizer.image_token``, ``tokenizer.image_token_id``...) are set as in the real tokenizers.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    if style not in _SPECS:
        raise ValueError(f"unknown tokenizer style {style!r}; choose one of {STYLES}")
    spec = _SPECS[style]
    tok = Tokenizer.from_str(base_tokenizer_json(corpus))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec["specials"]])
    if spec["add_bos"]:
        bos = spec["roles"]["bos"]
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
                ),
            ]
        )
    kwargs = {f"{role}_token": tok_str for role, tok_str in spec["roles"].items()}
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        chat_template=spec["template"],
        model_max_length=model_max_length,
        padding_side=padding_side,
        extra_special_tokens=dict(spec["extra"]),
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    return hf
