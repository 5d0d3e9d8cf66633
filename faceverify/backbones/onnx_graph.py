"""A feed-forward face network rebuilt in PyTorch from an ONNX graph, so that a student can start
from a teacher's weights (recipe key ``model.init_from``; e.g. insightface's ArcFace MobileFaceNet).

``graph_spec(onnx_file)`` reads the graph's structure into plain JSON (ops, wiring, attributes,
parameter shapes): a checkpoint stores it as the backbone's options and rebuilds the network from
it. ``load_onnx_weights(net, onnx_file)`` copies the graph's weights in. Supported ops: Conv,
PRelu, Relu, Add, Flatten, Gemm, BatchNormalization (what face embedders of the MobileFaceNet and
ResNet families are made of); anything else is a ConfigError naming the op.

The network may be built for another input size than the graph's: the convolutions do not care,
and the fully connected layer after the last feature map (``Flatten -> Gemm``) has its weights
resampled to the new map size (area averaging, scaled so that a constant map gives the same
output), a starting point that distillation then fine-tunes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

SUPPORTED = ("Conv", "PRelu", "Relu", "Add", "Flatten", "Gemm", "BatchNormalization")


def graph_spec(onnx_file: str, input_scale: float = 1.0) -> dict:
    """The structure of an ONNX face embedder as JSON. ``input_scale`` multiplies the first
    convolution's weights at load time: e.g. 128 / 127.5 when the graph expects (x - 127.5) / 127.5
    and faceverify feeds (x - 127.5) / 128 (``transforms.crops_to_tensor``)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_file))
    graph = model.graph
    shapes = {init.name: list(numpy_helper.to_array(init).shape) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in shapes]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    nodes = []
    for node in graph.node:
        if node.op_type not in SUPPORTED:
            raise ConfigError(f"{onnx_file}: op {node.op_type} is not supported for a student's start ({SUPPORTED}).")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items() if isinstance(v, (int, float, list, bytes))}
        nodes.append({"op": node.op_type, "inputs": list(node.input), "output": node.output[0], "attrs": attrs,
                      "params": {name: shapes[name] for name in node.input if name in shapes}})
    return {"input": inputs[0].name, "output": graph.output[0].name, "size": [int(dims[2]), int(dims[3])],
            "nodes": nodes, "input_scale": float(input_scale)}


class OnnxGraphNet(nn.Module):
    """The graph of ``graph_spec`` as modules (``layers[str(i)]`` for node i) for ``input_size``."""

    def __init__(self, graph: dict, embedding_dim: int, input_size: tuple[int, int]):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        self.resampled: dict[str, tuple[int, int, int]] = {}  # Gemm node -> (channels, h, w) of its new input map
        shape: dict[str, tuple[int, ...]] = {graph["input"]: (3, *input_size)}
        flattened: dict[str, tuple[int, ...]] = {}  # Flatten output -> the map it flattened
        for i, node in enumerate(graph["nodes"]):
            op, attrs, params = node["op"], node["attrs"], list(node["params"].values())
            src = shape[node["inputs"][0]]
            if op == "Conv":
                out_c, in_per_group, kh, kw = params[0]
                groups, stride, pads = int(attrs.get("group", 1)), attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
                if pads[0] != pads[2] or pads[1] != pads[3]:
                    raise ConfigError("asymmetric Conv padding is not supported for a student's start.")
                self.layers[str(i)] = nn.Conv2d(in_per_group * groups, out_c, (kh, kw), tuple(stride), (pads[0], pads[1]),
                                                groups=groups, bias=len(params) > 1)
                h = (src[1] + 2 * pads[0] - kh) // stride[0] + 1
                w = (src[2] + 2 * pads[1] - kw) // stride[1] + 1
                if h < 1 or w < 1:
                    raise ConfigError(f"input {input_size[0]}x{input_size[1]} is too small for this graph (node {i}: {op}).")
                shape[node["output"]] = (out_c, h, w)
            elif op == "PRelu":
                self.layers[str(i)] = nn.PReLU(int(np.prod(params[0])))
                shape[node["output"]] = src
            elif op == "BatchNormalization":
                c = params[0][0]
                self.layers[str(i)] = nn.BatchNorm1d(c, eps=float(attrs.get("epsilon", 1e-5))) if len(src) == 1 else \
                    nn.BatchNorm2d(c, eps=float(attrs.get("epsilon", 1e-5)))
                shape[node["output"]] = src
            elif op == "Gemm":
                out_f, in_f = params[0] if attrs.get("transB", 0) else params[0][::-1]
                if node["inputs"][0] not in flattened and src[0] != in_f:
                    raise ConfigError(f"Gemm node {i} expects {in_f} inputs, gets {src[0]}.")
                self.layers[str(i)] = nn.Linear(int(np.prod(src)), out_f, bias=len(params) > 1)
                shape[node["output"]] = (out_f,)
            elif op == "Flatten":
                shape[node["output"]] = (int(np.prod(src)),)
                flattened[node["output"]] = src
            else:  # Relu, Add: shape-preserving
                shape[node["output"]] = src
            if op == "Gemm" and node["inputs"][0] in flattened:
                self.resampled[str(i)] = tuple(int(v) for v in flattened[node["inputs"][0]])
        self.feature_dim = shape[graph["output"]][0]
        if self.feature_dim != embedding_dim:
            raise ConfigError(f"the graph's embedding has {self.feature_dim} values, the recipe asks for {embedding_dim}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.graph["input"]: x}
        for i, node in enumerate(self.graph["nodes"]):
            op, args = node["op"], [values[n] for n in node["inputs"] if n not in node["params"]]
            if op == "Add":
                out = args[0] + args[1]
            elif op == "Relu":
                out = F.relu(args[0])
            elif op == "Flatten":
                out = torch.flatten(args[0], int(node["attrs"].get("axis", 1)))
            else:
                out = self.layers[str(i)](args[0])
            values[node["output"]] = out
        return values[self.graph["output"]]


def load_onnx_weights(net: OnnxGraphNet, onnx_file: str) -> None:
    """Copy the graph's weights into ``net`` (built from the same file's ``graph_spec``)."""
    import onnx
    from onnx import numpy_helper

    weights = {init.name: numpy_helper.to_array(init).copy() for init in onnx.load(str(onnx_file)).graph.initializer}
    graph, first_conv = net.graph, True
    with torch.no_grad():
        for i, node in enumerate(graph["nodes"]):
            names = list(node["params"])
            layer = net.layers[str(i)] if str(i) in net.layers else None
            if node["op"] == "Conv":
                w = torch.from_numpy(weights[names[0]])
                if first_conv:  # the graph's own input normalisation and colour order, folded in
                    w = w * graph.get("input_scale", 1.0)
                    if graph.get("bgr"):
                        w = w.flip(1)
                    first_conv = False
                layer.weight.copy_(w)
                if len(names) > 1:
                    layer.bias.copy_(torch.from_numpy(weights[names[1]]))
            elif node["op"] == "PRelu":
                layer.weight.copy_(torch.from_numpy(weights[names[0]].reshape(-1)))
            elif node["op"] == "BatchNormalization":
                for attr, name in zip(("weight", "bias", "running_mean", "running_var"), names):
                    getattr(layer, attr).copy_(torch.from_numpy(weights[name]))
            elif node["op"] == "Gemm":
                w = torch.from_numpy(weights[names[0]])
                if not node["attrs"].get("transB", 0):
                    w = w.T
                if str(i) in net.resampled and w.shape[1] != layer.in_features:
                    c, h, width = net.resampled[str(i)]
                    side = int(round((w.shape[1] / c) ** 0.5))  # the graph's own map (square for face embedders)
                    w = w.reshape(w.shape[0], c, side, side)
                    # Area-resample the spatial weights, scaled so a constant feature map keeps its output.
                    w = F.adaptive_avg_pool2d(w, (h, width)) if h <= side else F.interpolate(w, (h, width), mode="bilinear")
                    w = (w * (side * side) / (h * width)).reshape(w.shape[0], -1)
                layer.weight.copy_(w)
                if len(names) > 1:
                    layer.bias.copy_(torch.from_numpy(weights[names[1]]))


def graph_from_model(model) -> dict:
    """``graph_spec`` of a resolved ONNX model (``models.ModelRef``) whose card says how it reads
    pixels, with that normalisation folded into the first convolution for faceverify's crops
    ((x - 127.5) / 128, RGB)."""
    card = model.card_input or {"mean": 127.5, "std": 128.0, "colour": "RGB"}  # faceverify's own export
    mean, std = float(card.get("mean", 0.0)), float(card.get("std", 1.0))
    if abs(mean - 127.5) > 1e-6:
        raise ConfigError(f"model {model.path.name}: a student can start from a graph that centres pixels at 127.5; "
                          f"this one subtracts {mean} (its card's input.mean).")
    spec = graph_spec(str(model.weights), input_scale=128.0 / std)
    spec["bgr"] = str(card.get("colour", "RGB")).upper() == "BGR"
    return spec


def onnx_graph(embedding_dim: int = 512, input_size=(112, 112), graph: dict | None = None) -> OnnxGraphNet:
    if not graph:
        raise ConfigError("backbone onnx_graph needs the graph (set model.init_from to an ONNX model in the recipe).")
    return OnnxGraphNet(graph, embedding_dim, tuple(input_size))
