"""Write zennit's LRP outputs for tests/test_lrp.py (run by hand where torch and zennit are installed).

    /work/torchvenv/bin/python references/make_zennit_references.py

Builds two small networks with fixed seeded weights (NumPy), in Keras layout (NHWC, kernels HWIO),
copies them into PyTorch (NCHW, kernels OIHW, the Dense after Flatten with its rows permuted from
the HWC to the CHW flatten order), runs zennit's composites ``epsilon_plus``, ``epsilon_gamma_box``
and ``epsilon_alpha2_beta1`` with ``attr_output = one_hot · output`` (tfattr starts from the target
score ``f_c(x)``) and stores weights, inputs and relevances (NHWC) in
``tests/data/references/zennit_lrp_<net>.npz``. Not imported by the tests; needs no TensorFlow.

Networks (the Keras definitions are in tests/test_lrp.py and must stay in step):

* ``vgg``: Conv(3→4, 3×3, same)+ReLU, Conv(4→6)+BatchNorm+ReLU, MaxPool 2, Conv(6→6)+ReLU,
  Flatten, Dense(96→5)+ReLU, Dense(5→3). Biases non-zero.
* ``resnet``: Conv(3→4)+BN+ReLU, then a residual block Conv(4→4)+BN+ReLU, Conv(4→4)+BN, Add with
  the block input, ReLU, AvgPool 2, GlobalAveragePooling, Dense(4→3).
"""

import os

import numpy as np
import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus
from zennit.layer import Sum

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "references")
torch.set_default_dtype(torch.float64)


def conv_w(rng, cin, cout):
    return rng.normal(0, 0.4, (3, 3, cin, cout)), rng.normal(0, 0.1, cout)


def bn_w(rng, c):
    return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c))


def set_conv(conv, kernel, bias):
    conv.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
    conv.bias.data = torch.tensor(bias)


def set_bn(bn, gamma, beta, mean, var):
    bn.weight.data, bn.bias.data = torch.tensor(gamma), torch.tensor(beta)
    bn.running_mean.data, bn.running_var.data = torch.tensor(mean), torch.tensor(var)
    bn.eps = 1e-3  # Keras' default


class VGG(nn.Module):
    def __init__(self, w):
        super().__init__()
        # leaves registered in forward order: zennit's SequentialMergeBatchNorm pairs adjacent leaves
        self.seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                 nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(96, 5), nn.ReLU(), nn.Linear(5, 3))
        self.c1, self.c2, self.bn2, self.c3, self.d1, self.d2 = (self.seq[i] for i in (0, 2, 3, 6, 9, 11))
        set_conv(self.c1, *w["c1"]), set_conv(self.c2, *w["c2"]), set_conv(self.c3, *w["c3"])
        set_bn(self.bn2, *w["bn2"])
        k, b = w["d1"]  # Keras rows in (h, w, c) order; torch flattens (c, h, w)
        k = k.reshape(4, 4, 6, 5).transpose(2, 0, 1, 3).reshape(96, 5)
        self.d1.weight.data, self.d1.bias.data = torch.tensor(k.T.copy()), torch.tensor(b)
        self.d2.weight.data, self.d2.bias.data = torch.tensor(w["d2"][0].T.copy()), torch.tensor(w["d2"][1])

    def forward(self, x):
        return self.seq(x)


class ResNet(nn.Module):
    def __init__(self, w):
        super().__init__()
        # leaves registered in forward order (conv, bn pairs adjacent for SequentialMergeBatchNorm)
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.c3, self.b3 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.r3 = nn.ReLU()
        self.sum = Sum()
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.d = nn.Linear(4, 3)
        for conv, bn, name in ((self.c1, self.b1, "1"), (self.c2, self.b2, "2"), (self.c3, self.b3, "3")):
            set_conv(conv, *w["c" + name]), set_bn(bn, *w["bn" + name])
        self.d.weight.data, self.d.bias.data = torch.tensor(w["d"][0].T.copy()), torch.tensor(w["d"][1])

    def forward(self, x):
        h = self.r1(self.b1(self.c1(x)))
        r = self.b3(self.c3(self.r2(self.b2(self.c2(h)))))
        h = self.r3(self.sum(torch.stack([h, r], dim=-1)))
        return self.d(self.gap(self.pool(h)).flatten(1))


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit 0.5.1's merge, with the emptied BatchNorm's ``eps`` set to 0 while merged.

    zennit's ``MergeBatchNorm`` sets the BatchNorm to mean 0, variance 1, scale 1, shift 0 but keeps its
    ``eps``, so the merged network's output is divided by ``√(1 + eps)`` per merged BatchNorm (5e-6 with
    PyTorch's eps 1e-5, 5e-4 with Keras' 1e-3): not the model's forward. tfattr merges exactly; the
    references are made with that ``eps`` zeroed (restored afterwards).
    """

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self._eps = batch_norm.eps
        batch_norm.eps = 0.0

    def remove(self):
        self.batch_norm.eps = self._eps
        super().remove()


def weights(kind, rng):
    if kind == "vgg":
        return {"c1": conv_w(rng, 3, 4), "c2": conv_w(rng, 4, 6), "bn2": bn_w(rng, 6), "c3": conv_w(rng, 6, 6),
                "d1": (rng.normal(0, 0.3, (96, 5)), rng.normal(0, 0.1, 5)),
                "d2": (rng.normal(0, 0.5, (5, 3)), rng.normal(0, 0.1, 3))}
    return {"c1": conv_w(rng, 3, 4), "bn1": bn_w(rng, 4), "c2": conv_w(rng, 4, 4), "bn2": bn_w(rng, 4),
            "c3": conv_w(rng, 4, 4), "bn3": bn_w(rng, 4), "d": (rng.normal(0, 0.5, (4, 3)), rng.normal(0, 0.1, 3))}


def zennit_lrp(model, x_nhwc, target, composite):
    x = torch.tensor(x_nhwc.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    with composite.context(model) as modified:
        out = modified(x)
        onehot = torch.zeros_like(out)
        onehot[torch.arange(len(target)), torch.tensor(target)] = 1
        (relevance,) = torch.autograd.grad(out, x, grad_outputs=onehot * out)
    return out.detach().numpy(), relevance.detach().numpy().transpose(0, 2, 3, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    for kind, seed in (("vgg", 11), ("resnet", 12)):
        rng = np.random.default_rng(seed)
        w = weights(kind, rng)
        x = rng.uniform(0, 1, (2, 8, 8, 3))
        model = (VGG if kind == "vgg" else ResNet)(w).eval()
        target = [0, 2]
        stored = {"x": x, "target": np.array(target)}
        for name, value in w.items():
            for i, part in enumerate(value):
                stored[f"w_{name}_{i}"] = np.asarray(part)
        for cname, composite in (
                ("epsilon_plus", EpsilonPlus(canonizers=[ExactMergeBatchNorm()])),
                ("epsilon_gamma_box", EpsilonGammaBox(low=0.0, high=1.0, canonizers=[ExactMergeBatchNorm()])),
                ("epsilon_alpha2_beta1", EpsilonAlpha2Beta1(canonizers=[ExactMergeBatchNorm()]))):
            out, relevance = zennit_lrp(model, x, target, composite)
            assert np.allclose(out, model(torch.tensor(x.transpose(0, 3, 1, 2).copy())).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
            stored["out"] = out
            stored[cname] = relevance
        # inputs of both signs: the a⁻ terms of z⁺ and α2β1 in the first layer
        stored["x_signed"] = x * 2.0 - 1.0
        for cname, composite in (("epsilon_plus", EpsilonPlus(canonizers=[ExactMergeBatchNorm()])),
                                 ("epsilon_alpha2_beta1", EpsilonAlpha2Beta1(canonizers=[ExactMergeBatchNorm()]))):
            stored[cname + "_signed"] = zennit_lrp(model, stored["x_signed"], target, composite)[1]
        path = os.path.join(OUT, f"zennit_lrp_{kind}.npz")
        np.savez_compressed(path + ".tmp.npz", **stored)
        os.replace(path + ".tmp.npz", path)
        print(path, {k: v.shape for k, v in stored.items()})


if __name__ == "__main__":
    main()
