"""The reference: transformers' own modules for each registered family, captured stage by stage.

``HFOracle`` builds the family's transformers class (``LlamaForCausalLM``,
``Qwen3ForCausalLM``, ``Gemma3ForCausalLM``, ... as the architecture registry
names it) from a transformers config derived from the same ``ModelConfig`` and
loads the same float32 state dict the engine runs, so a difference between the
two captures is a difference in arithmetic, never in weights.

Half precision: the model is cast with ``.to(dtype)``, which would also cast
the RoPE inverse-frequency buffers; the oracle puts them back in float32, as
``from_pretrained(dtype=...)`` leaves them and as the engine keeps them, so the
reference is "weights and activations in the dtype, RoPE frequencies in float32".

How each stage is obtained (recorded per file as ``provenance`` and for the run
under ``provenance`` in the manifest; ``docs/oracle.md`` explains why):

- *Observed* values are tensors transformers itself computed and used: module
  outputs seen by forward hooks (norms including q/k and sandwich norms,
  projections, activation, the MoE router's logits, chosen experts and weights,
  the MoE block's output, layer outputs, and the logits the model returns),
  module inputs seen by the same hooks (``embedding`` is the input of the first
  layer's ``input_layernorm``, after any scaling the model applies;
  ``post_attn_residual`` the input of ``post_attention_layernorm``,
  ``ffn_swiglu`` the input of ``down_proj``), and the arguments and results of
  the attention function: queries/keys after RoPE (keys not repeated for GQA),
  the post-softmax weights and the attention output.
- *Recomputed* values are not materialised by transformers, so they are
  rebuilt from observed neighbours with the same expression: ``attn_scores``
  (``q·kᵀ·scaling`` before the mask, the first line of transformers' eager
  attention), and ``qkv_matmul`` for models with a q/k/v bias (``x @ Wᵀ`` of the
  projections' observed input, without the bias).

The hooks and the attention function that see these values are in ``hooks``;
the transformers config and class in ``build``. Hooks and the active capture
live only inside a context manager that removes them in ``finally``, and only
while the tap wants some stage: a plain forward installs nothing. transformers
finishes the query and key branches (q/k norms included) before the value
projection that pv's fused ``qkv_matmul`` needs, so those stages pass through
``InOrder`` and reach the tap in pv's computation order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pv import stages as stage_table
from pv.capture.model.loaded import LoadedModel
from pv.capture.oracle.build import HF_CLASSES, dispatch, hf_config, skipping_init
from pv.capture.oracle.hooks import ACTIVE, Capture, install, provenance, register
from pv.capture.oracle.logits import BlockedHead
from pv.capture.runners import Exposure, Settings
from pv.capture.runtime import resolve_device, torch_dtype
from pv.capture.tap import NULL_TAP, InOrder, Tap, row_blocks, wants_any
from pv.capture.tokens import check_ids
from pv.errors import PvError, require

if TYPE_CHECKING:
    import torch

#: The stages transformers computes before the value projection that pv's fused
#: ``qkv_matmul`` needs (the q/k norms of Qwen3 run inside the projections' hooks).
QKV_PROJECTIONS = frozenset({"qkv_matmul", "qkv_bias", "q_norm", "k_norm"})


class HFOracle:
    """transformers' forward on pv's weights: a ``Runner`` like pv's engine and llama.cpp."""

    def __init__(self, model: LoadedModel, device: str = "cpu", dtype: str = "float32",
                 device_map: Any = None, offload_dir: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        torch = require("torch")
        transformers = require("transformers")
        self.torch = torch
        self.loaded = model
        self.config = cfg = model.config
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        self.dtype_name = dtype.strip().lower()
        if cfg.architecture not in HF_CLASSES:
            raise PvError(f"the transformers oracle has no class for architecture '{cfg.architecture}'")
        register(transformers)
        self.hf_config = hf_config(cfg, transformers)
        model_cls = getattr(transformers, HF_CLASSES[cfg.architecture][1])
        with skipping_init():  # every parameter is overwritten by _load
            self.model = model_cls(self.hf_config)
        self._load(model.state_dict)
        rope = {n: b.detach().clone() for n, b in self.model.named_buffers() if n.endswith("inv_freq")}
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self._restore_rope(rope)
        self.device_map = None
        if device_map is not None:
            self.device_map = dispatch(self.model, device_map, self.device, offload_dir)
        self.provenance = provenance(cfg)

    # ------------------------------------------------------------------ public API

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of the reference's numerics and mask policy."""
        torch = self.torch
        return {
            "kernels": {"attention": "transformers eager (pv_capture)", "rope_inv_freq": "float32",
                        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                        "float32_matmul_precision": torch.get_float32_matmul_precision()},
            "mask": self.config.mask_policy(),
            **({} if self.device_map is None else {"device_map": self.device_map}),
        }

    def forward(self, token_ids: Sequence[int], tap: Tap = NULL_TAP, *, last: bool = False) -> torch.Tensor:
        """Logits [S, V] float32 (``last``: [1, V]); ``tap`` receives the requested stages with their provenance."""
        return self._run(self._ids(token_ids), tap, last, use_cache=False)

    def start(self) -> Any:
        """An empty transformers ``DynamicCache`` for ``decode``."""
        from transformers import DynamicCache

        return DynamicCache()

    def decode(self, token_ids: Sequence[int], cache: Any, tap: Tap = NULL_TAP, *, last: bool = False) -> torch.Tensor:
        """New tokens on top of transformers' own KV cache; logits [S_new, V] float32.

        The first call on an empty cache is the prefill. Scores and probabilities
        of a decode step span every cached position: ``[NH, S_new, P + S_new]``.
        """
        return self._run(self._ids(token_ids), tap, last, use_cache=True, **{self._cache_arg(): cache})

    def _run(self, ids: torch.Tensor, tap: Tap, last: bool, **kwargs: Any) -> torch.Tensor:
        """One call of the model; logits over ``PART_BYTES`` come in blocks (``BlockedHead``)."""
        split = row_blocks((int(ids.shape[1]), int(self.model.get_output_embeddings().weight.shape[0])))
        with self.torch.inference_mode(), self._capturing(tap) as capture:
            if split is None:
                logits: torch.Tensor = self.model(input_ids=ids, **kwargs).logits[0].float()
                return logits[-1:] if last else logits
            with BlockedHead(self.model, capture, split, last=last) as head:
                blocked: torch.Tensor = head.finish(self.model(input_ids=ids, **kwargs).logits)
            return blocked

    def _cache_arg(self) -> str:
        """``cache`` in newer transformers, ``past_key_values`` before it."""
        import inspect

        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation by transformers' own ``generate`` (no sampling, no early stop)."""
        from transformers import GenerationConfig

        ids = self._ids(token_ids)
        gen = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
            eos_token_id=None, pad_token_id=0, use_cache=True,
        )
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids),
                                      generation_config=gen)
        return [int(t) for t in out[0, ids.shape[1]:].tolist()]

    def stages(self) -> Exposure:
        return Exposure(dict(stage_table.absent(self.config.features)))

    def close(self) -> None:
        """Nothing to free: the model is ordinary modules."""

    # ------------------------------------------------------------------ internals

    def _ids(self, token_ids: Sequence[int]) -> torch.Tensor:
        ids = check_ids(token_ids, self.config.vocab_size)
        tensor: torch.Tensor = self.torch.tensor([ids], dtype=self.torch.long, device=self.device)
        return tensor

    def _restore_rope(self, saved: dict[str, Any]) -> None:
        """RoPE inverse frequencies back to float32 after a cast (see the module docstring).

        With GGUF per-frequency divisors (``rope_freqs``) the global frequencies are
        the file's: plain RoPE divided by them, as llama.cpp and the engine apply them.
        """
        factors = self.config.rope_freq_factors
        for name, value in saved.items():
            owner, _, attr = name.rpartition(".")
            module = self.model.get_submodule(owner)
            value = value.to(device=self.device, dtype=self.torch.float32)
            if factors is not None and not attr.startswith("sliding"):
                value = value / self.torch.tensor(factors, dtype=self.torch.float32, device=self.device)
            setattr(module, attr, value)

    def _load(self, state_dict: Any) -> None:
        """Copy pv's float32 weights into the module one tensor at a time; refuse anything that does not fit.

        The parameters were allocated uninitialised (``skipping_init``), so each
        tensor's pages are touched once, by its copy: the module ends up holding one
        copy of the weights, and the only other values alive at any time are the one
        tensor being copied (a ``SeededWeights`` model is drawn tensor by tensor).
        """
        torch = self.torch
        own = self.model.state_dict()  # the parameters' own storage, under their names
        filled: set[str] = set()
        with torch.no_grad():
            for name, value in self._module_tensors(state_dict):
                target = own.get(name)
                if target is None or tuple(target.shape) != tuple(value.shape):
                    why = "no such parameter" if target is None else (
                        f"shape {list(value.shape)}, transformers expects {list(target.shape)}")
                    raise PvError(f"{self.loaded.source}: weights do not fit transformers' "
                                  f"{type(self.model).__name__} (first mismatch: {name}: {why})")
                target.copy_(value)
                filled.add(name)
            for name, param in own.items():
                if name in filled or (name == "lm_head.weight" and self.config.tie_word_embeddings):
                    continue
                if not name.endswith(".bias"):
                    raise PvError(f"{self.loaded.source}: weights do not fit transformers' "
                                  f"{type(self.model).__name__} (first mismatch: {name})")
                # Modules transformers gives a bias the pv model does not have (Llama's o_proj
                # when attention_bias is set, Qwen2's q/k/v when the weights carry none) get zeros.
                param.zero_()
        if self.config.tie_word_embeddings:
            self.model.tie_weights()
            if self.model.lm_head.weight.data_ptr() != self.model.model.embed_tokens.weight.data_ptr():
                raise PvError("transformers did not tie lm_head to the embeddings")

    def _module_tensors(self, state_dict: Any) -> Iterator[tuple[str, Any]]:
        """pv's weights under transformers' names and layouts, one float32 tensor at a time."""
        torch, cfg = self.torch, self.config
        # Phi-3's modules take q|k|v and gate|up as one weight: pv name -> (fused name, its rows' names)
        fused: dict[str, tuple[str, list[str]]] = {}
        roles = cfg.family.roles(False)
        for layer in range(cfg.num_hidden_layers):
            for part, parts in cfg.family.hf_fused.items():
                members = [f"model.layers.{layer}.{roles[r]}" for r in parts]
                fused.update({m: (f"model.layers.{layer}.{part}.weight", members) for m in members})
        pieces: dict[str, dict[str, Any]] = {}  # fused name -> its pieces read so far
        moe = cfg.family.moe
        halves: dict[str, dict[str, Any]] = {}  # layer prefix -> the expert halves read so far
        for name in state_dict:
            tensor = torch.from_numpy(np.array(state_dict[name], dtype=np.float32, copy=True))
            prefix, _, part = name.rpartition("mlp.experts.")
            if name in fused:
                target, members = fused[name]
                got = pieces.setdefault(target, {})
                got[name] = tensor
                if len(got) == len(members):
                    del pieces[target]
                    yield target, torch.cat([got[m] for m in members], dim=0)
            elif not (moe and prefix):
                yield name, tensor
            elif part == "down_proj.weight":
                yield prefix + "mlp.experts.down_proj", tensor
            else:  # pv keeps each expert's gate and up apart; transformers fuses them
                held = halves.setdefault(prefix, {})
                held[part] = tensor
                if {"gate_proj.weight", "up_proj.weight"} <= held.keys():
                    del halves[prefix]
                    yield prefix + "mlp.experts.gate_up_proj", torch.cat(
                        [held["gate_proj.weight"], held["up_proj.weight"]], dim=1)

    @contextlib.contextmanager
    def _capturing(self, tap: Tap) -> Iterator[Capture | None]:
        """Install forward hooks and the attention capture for one forward (yielded); always remove them.

        Nothing is installed (None) unless the tap wants some stage of some layer.
        """
        cfg = self.config
        if not wants_any(tap, cfg.num_hidden_layers):
            yield None
            return
        windows = {i: w for i in range(cfg.num_hidden_layers) if (w := cfg.layer_window(i)) is not None}
        ordered = InOrder(tap, QKV_PROJECTIONS)
        capture = Capture(ordered, self.provenance, cfg.attention_bias,
                          heads_first=cfg.family.hf_qk_norm_heads_first, windows=windows)
        self.stages().tell(tap)
        handles: list[Any] = []
        token = ACTIVE.set(capture)
        try:
            install(self.model, cfg, capture, handles)
            yield capture
            ordered.flush()
        finally:
            ACTIVE.reset(token)
            for handle in handles:
                handle.remove()


def load(model: LoadedModel, settings: Settings) -> HFOracle:
    """The registry's factory (``pv.capture.runners``)."""
    return HFOracle(model, device=settings.device, dtype=settings.dtype, device_map=settings.device_map,
                    offload_dir=settings.offload_dir)
