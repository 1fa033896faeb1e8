"""Batched anchors for `bench/side_by_side.sh`: the reference U-Net (eval mode) in PyTorch and
ONNX Runtime, and with --train the full pix2pix training step, at a batch size that
../shared/reference/bench_torch.py (batch 1) does not take. Same networks, initialisation,
training step and timing rule (median after 2 warm-up runs).

    python bench/torch_batch.py --ngf 64 --size 256 --batch 4 --n 5 [--train]
"""
import argparse, os, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "shared", "reference"))
import torch  # noqa: E402
import p2p_ref as r  # noqa: E402
from bench_torch import med  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--train", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    g = r.UnetG(ngf=a.ngf, downs={256: 8, 128: 7}[a.size]); r.init_normal(g); g.eval()
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    with torch.no_grad():
        ms = med(lambda: g(x), a.n)
    print(f"torch_infer_ms {ms:.1f} ips {1e3 * a.batch / ms:.2f}")
    import onnxruntime as ort
    p = os.path.join(tempfile.mkdtemp(), "g.onnx")
    torch.onnx.export(g, (x,), p, input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads()
    s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    ms = med(lambda: s.run(None, {"x": xn}), a.n)
    print(f"onnxruntime_infer_ms {ms:.1f} ips {1e3 * a.batch / ms:.2f}")
    if a.train:
        train_step(a, g)


def train_step(a, g):
    """bench_torch.py's training step, on a batch."""
    import torch.nn as nn
    torch.manual_seed(0)
    d = r.PatchD(ndf=a.ngf); r.init_normal(d)
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    y = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    g.train(); d.train()
    og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss(); l1 = nn.L1Loss()

    def step():
        fake = g(x)
        for p in d.parameters(): p.requires_grad_(True)
        od.zero_grad()
        pf = d(torch.cat([x, fake.detach()], 1)); pr = d(torch.cat([x, y], 1))
        ld = 0.5 * (bce(pf, torch.zeros_like(pf)) + bce(pr, torch.ones_like(pr)))
        ld.backward(); od.step()
        for p in d.parameters(): p.requires_grad_(False)
        og.zero_grad()
        pf = d(torch.cat([x, fake], 1))
        lg = bce(pf, torch.ones_like(pf)) + 100 * l1(fake, y)
        lg.backward(); og.step()
    ms = med(step, a.n)
    print(f"torch_train_step_ms {ms:.1f} steps_per_s {1e3 / ms:.2f}")


if __name__ == "__main__":
    main()
