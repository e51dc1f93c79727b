"""The lmms-eval model class for our VLMs: a base checkpoint plus an optional LoRA adapter.

    lmms-eval --model mm_unidpo --model_args pretrained=llava-hf/llava-1.5-7b-hf,adapter=runs/x/adapter \\
        --tasks mm_pope_sample --include_path eval --batch_size 8 --output_path runs/eval

Model arguments (``--model_args key=value,...``):

``pretrained``            hub id or local checkpoint (any VLM family ``load_pretrained`` knows: llava, llava_next,
                          llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl, llava_orig)
``adapter``               a LoRA adapter directory (peft) applied on top; ``merge_adapter=true`` merges it
``load_in_4bit``          NF4 4-bit base (QLoRA recipe; needs CUDA and bitsandbytes)
``dtype``                 ``auto`` (the checkpoint's), ``bfloat16``, ``float16``, ``float32``
``device``                ``cuda``, ``cuda:1``, ``cpu``; default cuda if available; ``device_map=auto`` to shard
``batch_size``            requests per forward / generate call (lmms-eval's ``--batch_size`` sets it)
``max_new_tokens``        default when a task does not set one (1024)
``system_prompt``         an optional system message
``attn_implementation``   e.g. ``sdpa`` or ``flash_attention_2``
``max_rounds``            cap on rounds in ``generate_until_multi_round`` (16)

Prompts are rendered by the family adapter (:mod:`mm_unidpo.models`), as in training: the processor's chat
template, or LLaVA's conversation template for the original LLaVA code (``llava_orig``), from a user
message of image parts and text parts (``<image>`` in a task's text marks where each image goes; without
markers images come first), with the generation prompt. Generation is the adapter's batched, left-padded
``generate``; log-likelihoods are summed log-probs of the continuation tokens given the prompt and images,
computed by the same adapter code that scores responses in training.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from mm_unidpo.data.records import IMAGE_PLACEHOLDER, Prompt
from mm_unidpo.models import FAMILIES, get_adapter
from mm_unidpo.models.loading import load_pretrained

from .registration import MODEL_NAME
from .requests import as_bool, as_images, cut_at_stops, generation_settings

logger = logging.getLogger(__name__)

# The VLM families (causal_lm has no images: evaluate text models with lm-eval-harness or `mm-unidpo eval math`).


class MMUniDPO(lmms):
    """lmms-eval "simple" model (string contexts + ``doc_to_visual``) for every VLM family we train.

    ``MMUniDPO(model=..., processor=...)`` evaluates an already loaded model (e.g. right after training,
    through ``lmms_eval.evaluator.simple_evaluate(model=instance, ...)``); it is put in eval mode and
    moved to ``device``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        adapter: str | None = None,
        load_in_4bit: bool = False,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = 1024,
        system_prompt: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        merge_adapter: bool = False,
        device_map: str | dict[str, Any] | None = None,
        max_rounds: int = 16,
        model: Any = None,
        processor: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        kwargs.pop("max_batch_size", None)  # lmms-eval passes it to every model; batches here are fixed-size
        if kwargs:
            raise TypeError(f"unknown model_args for {MODEL_NAME}: {sorted(kwargs)}")
        if (model is None) != (processor is None):
            raise TypeError("pass both model= and processor= (an already loaded model), or neither")
        if model is None and not pretrained:
            raise TypeError(f"{MODEL_NAME} needs pretrained=<hub id or local checkpoint>")

        from accelerate import Accelerator

        accelerator = Accelerator()
        if accelerator.num_processes > 1:  # `accelerate launch`: data parallel, one full model per process
            device = f"cuda:{accelerator.local_process_index}"
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self.accelerator = accelerator
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        if model is None:
            load_in_4bit = as_bool(load_in_4bit)
            if load_in_4bit and device_map is None:
                device_map = {"": self._device.index or 0}  # a quantised model is placed at load time
            model, processor = load_pretrained(
                str(pretrained),
                adapter=str(adapter) if adapter else None,
                load_in_4bit=load_in_4bit,
                dtype=dtype,
                trust_remote_code=as_bool(trust_remote_code),
                attn_implementation=attn_implementation,
                device_map=device_map,
            )
            if adapter and as_bool(merge_adapter) and not load_in_4bit:
                model = model.merge_and_unload()
        if device_map is None and not getattr(model, "is_loaded_in_4bit", False):
            model = model.to(self._device)
        elif getattr(model, "hf_device_map", None):
            first = next(iter(model.hf_device_map.values()))
            self._device = torch.device(first if not isinstance(first, int) else f"cuda:{first}")
        self._model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        try:
            self.adapter = get_adapter(model, processor, padding_side="right", max_image_pixels=None)
        except ValueError as error:
            raise ValueError(f"{MODEL_NAME}: {error}") from None
        self.family = self.adapter.family
        if not self.adapter.spec.vision_modules:
            vlms = [name for name, family in FAMILIES.items() if family.spec.vision_modules]
            raise NotImplementedError(
                f"{MODEL_NAME} evaluates vision-language models ({', '.join(vlms)}); "
                f"this is a {self.family!r} model: evaluate text models with "
                f"lm-eval-harness or `mm-unidpo eval math`"
            )
        self.batch_size_per_gpu = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self.system_prompt = system_prompt or None
        self.max_rounds = int(max_rounds)
        self.pretrained, self.adapter_path = pretrained, adapter
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.stop_token_ids = sorted(self.adapter.end_token_ids)
        logger.info(
            "%s: %s (%s)%s on %s",
            MODEL_NAME,
            pretrained or type(model).__name__,
            self.family,
            f" + adapter {adapter}" if adapter else "",
            self._device,
        )

    # ---- properties lmms-eval reads ---------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    # ---- prompts ------------------------------------------------------------------------------------

    def prompt(self, context: str, images: list[Image.Image]) -> Prompt:
        """The task's prompt with its images."""
        return Prompt(self._content(context, len(images)), images=list(images))

    def _content(self, context: str, n_images: int) -> str | list[dict[str, Any]]:
        """The task's text with images where ``<image>`` stands (else first, one per line, as LLaVA's
        scripts do), after an optional system message."""
        n_markers = context.count(IMAGE_PLACEHOLDER)
        if n_markers != n_images:
            if n_markers:
                logger.warning("context has %d <image> markers but %d images: images go first", n_markers, n_images)
            text = " ".join(c.strip() for c in context.split(IMAGE_PLACEHOLDER) if c.strip()) if n_markers else context
            context = f"{IMAGE_PLACEHOLDER}\n" * n_images + text
        if self.system_prompt:
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": context}]
        return context

    def messages(self, context: str, n_images: int) -> list[dict[str, Any]]:
        """The prompt as the family's chat messages."""
        return self.adapter.messages(Prompt(self._content(context, n_images)))

    def render(self, context: str, n_images: int) -> str:
        """The chat-template text of a prompt, ending with the assistant generation prompt."""
        return self.adapter.render_prompt(Prompt(self._content(context, n_images)))

    def _visuals(self, doc_to_visual: Callable | None, doc: Any) -> list[Image.Image]:
        visuals = doc_to_visual(doc) if doc_to_visual is not None else None
        return self._as_images(visuals)

    _as_images = staticmethod(as_images)

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    # ---- batching -------------------------------------------------------------------------------------

    def _batches(
        self, items: list[Any], group: Callable[[Any], Any], length: Callable[[Any], int]
    ) -> Iterator[list[tuple[int, Any]]]:
        """Batches of (original index, item): items grouped by `group` (same generation settings), longest
        first so that a batch that does not fit in memory fails at once."""
        groups: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[group(item)].append((i, item))
        for members in groups.values():
            members.sort(key=lambda m: -length(m[1]))
            for start in range(0, len(members), self.batch_size):
                yield members[start : start + self.batch_size]

    # ---- generation ---------------------------------------------------------------------------------

    def _generation_settings(self, gen_kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        return generation_settings(gen_kwargs, default_max_new_tokens=self.max_new_tokens)

    @torch.no_grad()
    def generate(
        self, contexts: list[str], images: list[list[Image.Image]], gen_kwargs: dict[str, Any] | None = None
    ) -> list[str]:
        """Generate for one batch of prompts (one list of images per prompt)."""
        settings, until = self._generation_settings(gen_kwargs)
        texts = [self.render(c, len(imgs)) for c, imgs in zip(contexts, images)]
        if until:
            settings.update(stop_strings=until, tokenizer=self.tokenizer)
        new_tokens = self.adapter.generate(
            self.model,
            texts,
            images,
            device=self.device,
            **settings,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.stop_token_ids,
        )
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [self._cut(text, until) for text in decoded]

    _cut = staticmethod(cut_at_stops)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        args = [r.args for r in requests]
        results: list[str | None] = [None] * len(args)
        bar = tqdm(total=len(args), disable=self.rank != 0, desc="mm_unidpo generate")
        for batch in self._batches(
            args,
            group=lambda a: (a[4], a[5], json.dumps(a[1], sort_keys=True, default=str)),
            length=lambda a: len(a[0]),
        ):
            contexts = [a[0] for _, a in batch]
            images = [self._visuals(a[2], self._doc(a[4], a[5], a[3])) for _, a in batch]
            outputs = self.generate(contexts, images, batch[0][1][1])
            for (i, a), text in zip(batch, outputs):
                results[i] = text
                self.cache_hook.add_partial("generate_until", (a[0], a[1]), text)
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Multi-round generation (lmms-eval's protocol): round 0 answers the task's context; after each
        round the task's ``doc_to_text(doc, previous_output=..., round_idx=r, previous_round_info=...)``
        returns ``(visuals, next_context, terminal, outputs, round_info)``; ``visuals=None`` keeps the
        previous images, ``outputs`` (if not None) replaces the outputs so far. A document stops at its own
        terminal signal (or after ``max_rounds``). Returns each document's outputs, one string per round."""
        args = [r.args for r in requests]  # (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split)
        results: list[list[str] | None] = [None] * len(args)
        bar = tqdm(total=len(args), disable=self.rank != 0, desc="mm_unidpo multi-round")
        for batch in self._batches(
            args,
            group=lambda a: (a[5], a[6], json.dumps(a[1], sort_keys=True, default=str)),
            length=lambda a: len(a[0]),
        ):
            docs = [self._doc(a[5], a[6], a[4]) for _, a in batch]
            contexts = [a[0] for _, a in batch]
            images = [self._visuals(a[2], doc) for (_, a), doc in zip(batch, docs)]
            outputs: list[list[str]] = [[] for _ in batch]
            info: list[Any] = [None] * len(batch)
            active = list(range(len(batch)))
            for round_idx in range(self.max_rounds):
                answers = self.generate([contexts[k] for k in active], [images[k] for k in active], batch[0][1][1])
                for k, answer in zip(active, answers):
                    outputs[k].append(answer)
                still = []
                for k in active:
                    payload = batch[k][1][3](
                        docs[k], previous_output=outputs[k], round_idx=round_idx + 1, previous_round_info=info[k]
                    )
                    if isinstance(payload, str):
                        contexts[k] = payload
                        still.append(k)
                        continue
                    if not (isinstance(payload, tuple) and len(payload) == 5):
                        continue  # None or anything else ends this document
                    visuals, next_context, terminal, updated, info[k] = payload
                    if updated is not None:
                        outputs[k] = [str(x) for x in updated]
                    if terminal or next_context is None:
                        continue
                    contexts[k] = next_context
                    if visuals is not None:
                        images[k] = self._as_images(visuals)
                    still.append(k)
                active = still
                if not active:
                    break
            for (i, a), out in zip(batch, outputs):
                results[i] = out
                self.cache_hook.add_partial("generate_until_multi_round", (a[0], a[1]), out)
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    # ---- log-likelihood -------------------------------------------------------------------------------

    def _continuation_ids(self, prompt: str, continuation: str) -> list[int]:
        """Token ids of `continuation` as they follow `prompt` (encoded together, split at the prompt's
        tokens, as lm-eval-harness does; encoded alone if the joint encoding merges across the boundary)."""
        whole = self.tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if whole[: len(head)] == head:
            return whole[len(head) :]
        return self.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def loglikelihoods(self, items: list[tuple[str, str, list[Image.Image]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation tokens | prompt, images), whether greedy decoding gives exactly them)
        for one batch of (context, continuation, images)."""
        prompts = [self.adapter.encode_prompt(self.prompt(context, images)) for context, _, images in items]
        continuations = [
            [self._continuation_ids(p.text, continuation)] for p, (_, continuation, _) in zip(prompts, items)
        ]
        sums, greedy = self.adapter.score_continuations(self.model, prompts, continuations, device=self.device)
        return [(float(s), bool(g)) for s, g in zip(sums[:, 0].tolist(), greedy[:, 0].tolist())]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        args = [
            r.args for r in requests
        ]  # (context, continuation or doc_to_target, doc_to_visual, doc_id, task, split)
        results: list[tuple[float, bool] | None] = [None] * len(args)
        bar = tqdm(total=len(args), disable=self.rank != 0, desc="mm_unidpo loglikelihood")
        for batch in self._batches(args, group=lambda a: 0, length=lambda a: len(a[0])):
            items = []
            for _, (context, continuation, doc_to_visual, doc_id, task, split) in batch:
                doc = self._doc(task, split, doc_id)
                if callable(continuation):
                    continuation = continuation(doc)
                items.append((context, str(continuation), self._visuals(doc_to_visual, doc)))
            for (i, a), result in zip(batch, self.loglikelihoods(items)):
                results[i] = result
                self.cache_hook.add_partial("loglikelihood", (a[0], a[1]), result)
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]
