"""llama.cpp as a captured engine: its own intermediate tensors, read through ``cb_eval``.

llama.cpp names the nodes of its compute graph (``attn_norm-3``, ``Qcur-3``,
``kq_soft_max-3``, ``l_out-3``, ``result_output``) and calls a graph-evaluation
callback for each node it is asked about, right after computing it. This
module runs a GGUF model through the C API of ``llama-cpp-python`` (ctypes,
the ``[llamacpp]`` extra) with such a callback, copies the nodes that map to pv
stages, converts ggml's layouts into pv's canonical ones (``convert``) and hands
them to the same kind of tap the pv engine and the oracle use, in pv's
computation order (the graph finishes the query branch, RoPE included, before
the value projection: ``InOrder`` holds those stages). What a probe of
llama-cpp-python 0.3.36 found, and how it is handled here:

- One ggml name covers several ops (``Qcur-N`` is the MUL_MAT, then a RESHAPE,
  then the ROPE; ``norm-N`` comes twice per layer), so a node is identified by
  name, op and occurrence (the graph's rules, ``nodes.GRAPHS``).
- Flash attention fuses ``kq``/``kq_soft_max`` into one node: the context is
  created with it off. The KV cache is float32, so no extra rounding happens
  between ``Kcur`` and the scores.
- ``kq-N`` is ``K·Q`` before the scale and the mask (both live in the softmax
  op) and spans the whole padded KV length. ``attn_scores`` is ``kq`` times the
  softmax op's own scale (read from its op parameters), cut to the cells that
  hold this sequence; ``attn_softmax`` is cut the same way.
- llama.cpp's Llama GGUF converter permutes the rows of Wq and Wk so that RoPE
  rotates adjacent pairs; pv (and transformers) rotate the two halves of each
  head. Q and K (before and after RoPE) are put back into the halves order per
  head, as the GGUF loader does for the weights.
- Buffers are reused once the callback returns, so values are copied inside it.
- Every position of the batch asks for logits, so ``result_output`` and the
  last layer keep all rows (no ``inp_out_ids`` row selection).

Each architecture has its own graph and node table (``nodes.GRAPHS``). Stages llama.cpp
does not expose (``ffn_silu``: its SwiGLU or GeGLU is one fused op)
are recorded in the manifest under ``not_exposed``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pv import stages as stage_table
from pv.capture.faults import FaultSpec, check_fault, parse_fault
from pv.capture.llamacpp.convert import Converter, Pass
from pv.capture.llamacpp.ggml import GgmlTensor, tensor_at
from pv.capture.llamacpp.library import close_model, file_type, ggml_functions, load_library, open_model, silence
from pv.capture.llamacpp.nodes import Graph, Rule, graph_for, split_name, stages_of
from pv.capture.model import gguf as gguf_model
from pv.capture.model.config import ModelConfig
from pv.capture.model.loaded import LoadedModel
from pv.capture.runners import Exposure, Settings
from pv.capture.tap import NULL_TAP, InOrder, Tap, wants_any
from pv.capture.tokens import check_ids
from pv.errors import PvError

# --------------------------------------------------------------------------- the library


def check(model: str, device: str, dtype: str) -> None:
    """What ``--engine llama.cpp`` can run, checked before anything loads (the registry's ``check``)."""
    if not str(model).lower().endswith(".gguf"):
        raise PvError(f"--engine llama.cpp runs GGUF files; '{model}' is not a .gguf file")
    if device.strip().lower() != "cpu":
        raise PvError("--engine llama.cpp captures on the CPU only (--device cpu)")
    if dtype.strip().lower() != "float32":
        raise PvError("--engine llama.cpp computes in the GGUF's own types; leave --dtype float32")
    load_library()


# --------------------------------------------------------------------------- the runner


class LlamaCppRunner:
    """A GGUF model in llama.cpp, a ``Runner`` like pv's engine and the oracle.

    ``forward(ids, tap)`` runs one prefill from an empty KV cache; ``start()``
    empties the cache and ``decode(ids, state, tap)`` runs new tokens on top of
    it (scores span every cached position). llama.cpp keeps one sequence per
    context, so a ``start()`` ends the decode state before it. Logits are
    float32 ``[S, V]``.
    """

    #: Threads a capturing context decodes single tokens on (see ``__init__``).
    DECODE_THREADS = 1

    def __init__(self, path: str | os.PathLike[str], config: ModelConfig, *,
                 n_ctx: int = 1024, threads: int | None = None,
                 fault: FaultSpec | str | None = None, record_names: bool = False, capture: bool = True):
        self.llama_cpp = lc = load_library()
        self.path = Path(path)
        if not self.path.is_file():
            raise PvError(f"{self.path}: no such GGUF file")
        self.config = config
        self.fault = parse_fault(fault, "llama.cpp") if isinstance(fault, str) else fault
        self.record_names = record_names
        self.graph: Graph = graph_for(config.family)
        self._by_name = self.graph.by_name()
        self._by_source = self.graph.by_source()
        #: (ggml name, op) -> the rule it matches and its layer, or None: every graph asks
        #: about the same few hundred nodes, once before and once after computing each.
        self._matches: dict[tuple[bytes, int], tuple[Rule, int | None, tuple[str, str]] | None] = {}
        self._stages = {id(rule): stages_of(rule) for rule in self.graph.rules}
        #: The node a planted fault rewrites, and its layer.
        self._node: tuple[tuple[str, str], int | None] | None = None
        if self.fault is not None:
            node = self.fault.fault.node
            if node is None:
                raise PvError(f"fault {self.fault} is planted in {self.fault.fault.runner}, not in a llama.cpp node")
            check_fault(self.fault, config.num_hidden_layers, config.features)
            feeds = [stages_of(r) for r in self.graph.rules if (r.name, r.op) == node]
            if not feeds:
                raise PvError(f"fault {self.fault.name}: llama.cpp's {self.graph.arch} graph has no "
                              f"{node[0]} {node[1]} node to change")
            if (self.fault.fault.stage,) not in feeds:  # a fused node: the change would show earlier
                raise PvError(f"fault {self.fault.name}: llama.cpp's {self.graph.arch} graph computes "
                              f"{' and '.join(feeds[0])} in one {node[0]} {node[1]} node")
            self._node = (node, self.fault.layer)
        self._convert = Converter(config, self.graph)
        self.ggml = ggml_functions(lc)
        silence(lc)
        lc.llama_backend_init()
        self._model, self._model_key = open_model(lc, self.path)  # shared by this process's runners
        if not self._model:
            why = " (experts stored one tensor each, which this llama.cpp no longer reads; " \
                  "pv's engine does)" if gguf_model.has_per_expert_tensors(self.path) else ""
            raise PvError(f"{self.path}: llama.cpp could not load this GGUF file{why}")
        self.n_ctx = int(n_ctx)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = self.n_ctx
        cparams.n_ubatch = self.n_ctx  # one prefill is one graph: one callback per node
        cparams.n_seq_max = 1
        n_threads = threads or max(1, min(os.cpu_count() or 1, 8))
        cparams.n_threads = cparams.n_threads_batch = n_threads
        if capture or self.fault is not None:
            # The callback ends a graph piece at every node it asks for (about 480 per
            # step for SmolLM2), and each piece is one round trip of llama.cpp's thread
            # pool; a one-token step's pieces are too small to share, so a capturing
            # context decodes single tokens on one thread (batches keep n_threads).
            # ggml's CPU kernels give each output element to one thread, so the values
            # are the same bytes (checked on every stage of a SmolLM2 generation).
            cparams.n_threads = min(n_threads, self.DECODE_THREADS)
        cparams.flash_attn_type = 0  # disabled: kq and kq_soft_max stay separate nodes
        cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32 cache: no rounding of K and V
        cparams.no_perf = True
        # The callback is asked about every graph node; without capture (plain
        # generation, as users run llama.cpp) the context has none and pays nothing.
        self.capture = bool(capture) or self.fault is not None
        self._callback = lc.ggml_backend_sched_eval_callback(self._on_node)
        if self.capture:
            cparams.cb_eval = self._callback
            cparams.cb_eval_user_data = None
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            close_model(self._model_key)
            self._model = None
            raise PvError(f"{self.path}: llama.cpp could not create a context")
        self.n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self._model)))
        buf = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self._model, buf, ctypes.sizeof(buf))
        self.description = buf.value.decode("utf-8", "replace")
        self.threads = n_threads
        self.decode_threads = int(cparams.n_threads)
        self._pass: Pass | None = None
        self.pos = 0
        self._session = 0
        self.dtype_name = "float32"

    # ------------------------------------------------------------------ public API

    def forward(self, token_ids: Sequence[int], tap: Tap = NULL_TAP, *, last: bool = False) -> Any:
        """Prefill ``token_ids`` from an empty cache; logits [S, V] as a torch tensor ([1, V]: ``last``)."""
        return self.decode(token_ids, self.start(), tap, last=last)

    def start(self) -> int:
        """Empty llama.cpp's KV cache; the state ``decode`` takes (any earlier one is over)."""
        self.reset()
        self._session += 1
        return self._session

    def decode(self, token_ids: Sequence[int], state: int, tap: Tap = NULL_TAP, *, last: bool = False) -> Any:
        """Run new tokens at the next positions, reading every cached position (logits [S_new, V], or
        [1, V] with ``last``)."""
        if state != self._session:
            raise PvError("this llama.cpp decode state is over: start() was called again")
        logits = self._decode(check_ids(token_ids, self.n_vocab), tap)
        return logits[-1:] if last else logits

    def generate(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation with llama.cpp's KV cache."""
        state = self.start()
        logits = self.decode(token_ids, state)
        out: list[int] = []
        for _ in range(int(max_new_tokens)):
            nxt = int(logits[-1].argmax())
            out.append(nxt)
            if len(out) < int(max_new_tokens):
                logits = self.decode([nxt], state)
        return out

    def stages(self) -> Exposure:
        """One reason per stage: what the model lacks first, then what llama.cpp fuses away, then
        what this graph has no node for."""
        reasons = dict(stage_table.absent(self.config.features))
        for stage, reason in self.graph.not_exposed.items():
            reasons.setdefault(stage, f"not exposed by llama.cpp: {reason}")
        for st in stage_table.STAGES:
            if st.name not in self.graph.mapped:
                reasons.setdefault(st.name, f"llama.cpp's {self.graph.arch} graph has no such node")
        return Exposure(reasons)

    def run_info(self) -> dict[str, Any]:
        """The manifest's record of how llama.cpp ran (the quantization sets the tolerance class)."""
        return {
            "quantization": file_type(self.description),
            "llama_cpp": {"model": self.description, "flash_attn": False, "kv_cache": "f32",
                          "n_ctx": self.n_ctx, "threads": self.threads,
                          "threads_single_token": self.decode_threads},
            "graph": self.graph.arch,
            "not_exposed": dict(self.graph.not_exposed),
        }

    def reset(self) -> None:
        lc = self.llama_cpp
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        self.pos = 0

    def close(self) -> None:
        lc = self.llama_cpp
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            close_model(self._model_key)  # stays loaded for the next runner on this file
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing useful to do at teardown
            pass

    # ------------------------------------------------------------------ internals

    def _decode(self, ids: list[int], tap: Tap) -> Any:
        import torch

        lc = self.llama_cpp
        if not self.capture and wants_any(tap, self.config.num_hidden_layers):
            raise PvError("this llama.cpp context was made without capture (capture=False)")
        if self.pos + len(ids) > self.n_ctx:
            raise PvError(f"{self.pos + len(ids)} positions exceed llama.cpp's context of {self.n_ctx}")
        batch = lc.llama_batch_init(len(ids), 0, 1)
        try:
            for i, tok in enumerate(ids):
                batch.token[i] = tok
                batch.pos[i] = self.pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1  # every position: logits and the last layer keep all rows
            batch.n_tokens = len(ids)
            self.stages().tell(tap)
            tap.borrow = True  # every array handed over is a private copy, never changed after
            self._pass = Pass(InOrder(tap), self.pos, len(ids), self.fault)
            rc = lc.llama_decode(self._ctx, batch)
            state, self._pass = self._pass, None
        finally:
            lc.llama_batch_free(batch)
        if state.error is not None:
            raise state.error
        state.tap.flush()
        if rc != 0:
            raise PvError(f"llama_decode failed with code {rc}")
        self.last_names = state.names
        ptr = lc.llama_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(len(ids) * self.n_vocab,)).copy()
        self.pos += len(ids)
        return torch.from_numpy(logits.reshape(len(ids), self.n_vocab))

    def _rule(self, t: GgmlTensor, state: Pass) -> tuple[Rule, int | None, tuple[str, str]] | None:
        """The rule node ``t`` matches, its layer, and its key in ``state.seen`` (name-layer, op)."""
        raw = t.name
        slot = (raw, int(t.op))
        if slot in self._matches:
            match = self._matches[slot]
        else:
            name = raw.decode("utf-8", "replace")
            base, layer = split_name(name)
            if base not in self._by_name:
                if name.startswith("node_"):  # unnamed: known by the node it reads, and names repeat
                    found = self._unnamed_rule(t, name)
                    return None if found is None else (*found, (f"{found[0].name}-{found[1]}", found[0].op))
                self._matches[slot] = None
                return None
            match = self._matches[slot] = self._named_rule(base, layer, self.ggml.op_name(slot[1]))
        if match is None or state.seen.get(match[2], 0) != match[0].occurrence:
            return None
        return match

    def _named_rule(self, base: str, layer: int | None, op: str) -> tuple[Rule, int | None, tuple[str, str]] | None:
        for rule in self._by_name[base]:
            if rule.op == op and (layer is not None) == rule.per_layer:
                return rule, layer, (f"{base}-{layer}", op)
        return None

    def _unnamed_rule(self, t: GgmlTensor, name: str) -> tuple[Rule, int | None] | None:
        """A node ggml named ``node_N``, known by the named node it reads (the output projection)."""
        if not self._by_source:
            return None
        op = self.ggml.op_name(int(t.op))
        for rules in self._by_source.values():
            for rule in rules:
                if rule.op != op or rule.via_src is None or not t.src[rule.via_src]:
                    continue
                src_base, src_layer = split_name(t.src[rule.via_src].contents.name.decode("utf-8", "replace"))
                if src_base == rule.name and (src_layer is not None) == rule.per_layer:
                    return rule, src_layer
        return None

    def _wanted(self, rule: Rule, layer: int | None, state: Pass) -> bool:
        if self._node is not None and ((rule.name, rule.op), layer) == self._node:
            return True
        tap = state.tap
        stages = self._stages.get(id(rule)) or stages_of(rule)  # the table's rules: split once
        stage = stages[0]
        if len(stages) > 1:
            return any(tap.wants(s, layer) for s in stages)
        if stage == "attn_scores":
            return bool(tap.wants("attn_scores", layer))
        if stage == "attn_softmax":
            return bool(tap.wants("attn_softmax", layer) or tap.wants("attn_scores", layer))
        return bool(tap.wants(stage, 0 if stage == "embedding" else layer))

    def _on_node(self, ptr: int, ask: bool, user_data: Any) -> bool:
        state = self._pass
        if state is None or state.error is not None:
            return bool(ask) is False
        try:
            t = tensor_at(ptr)
            found = self._rule(t, state)
            if ask:
                return found is not None and self._wanted(found[0], found[1], state)
            if self.record_names:
                state.names.append(f"{t.name.decode()}:{self.ggml.op_name(int(t.op))}")
            if found is None:
                return True
            rule, layer, seen = found
            state.seen[seen] = state.seen.get(seen, 0) + 1
            values = self.ggml.read(ptr, t)
            if values is None:
                raise PvError(f"llama.cpp node {t.name.decode()} has type "
                              f"{self.ggml.type_name(int(t.type))}; pv reads F32, F16 and I32 only")
            fault = state.fault
            if fault is not None and fault.fault.perturb is not None and ((rule.name, rule.op), layer) == self._node:
                values = fault.fault.perturb(values, None)  # what llama.cpp's later nodes now read
                self.ggml.write(ptr, t, values)
            params = bytes(t.op_params) if rule.op == "SOFT_MAX" else b""  # the softmax's scale
            node = t.name.decode() if rule.via_src is not None else seen[0] if rule.per_layer else rule.name
            self._convert.emit(rule, layer, node, params, values, state)
            return True
        except BaseException as exc:  # noqa: BLE001 - re-raised after llama_decode returns
            state.error = exc
            return False


def load(model: LoadedModel, settings: Settings) -> LlamaCppRunner:
    """The registry's factory (``pv.capture.runners``): the GGUF file the model was loaded from."""
    return LlamaCppRunner(model.source, model.config, fault=settings.fault)
