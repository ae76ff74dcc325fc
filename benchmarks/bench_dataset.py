"""Whole datasets (issue 30): ``tfattr.explain_dataset`` against the same method on in-memory batches.

1. **Throughput.** ``explain_dataset`` (decode in ``tf.data``, attribution, a background thread
   compressing and committing each chunk to the zarr store with its Parquet rows and marker) over
   a folder of PNG files and over a ``tf.data`` pipeline (``from_tensor_slices(paths)`` →
   ``read_file`` → ``decode_png``) of the same files, against the best hand-written loop over the same images
   preloaded as float32 arrays — ``method.attribute(images[i:i + B])`` into a preallocated array,
   same batch ``B`` and the same fixed engine chunk size — on the small VGG-style CNN of
   ``bench_engine.py`` at 64×64: Integrated Gradients (32 steps, the common case) and the plain
   gradient (the hardest case: one forward+backward per image, so decoding and writing weigh
   most). Runs are interleaved (loop, folder, tf.data, loop, …), best of ``--repeats`` each after a
   warm-up; printed: seconds, images/s, the throughput ratio store / loop (goal ≥ 0.95) from wall
   time, and the same from the process's CPU time (the machine is shared: the CPU-time ratio
   shows the extra work — decoding, compression, hashing — whatever the other jobs do). For the
   gradient also a run with ``durable=False`` (no fsyncs) and the CPU of decoding alone and of
   writing the store alone, which account for the gap.
2. **Peak memory** (measured first). Each run in its own subprocess: ``ru_maxrss`` of that child
   from ``wait4`` and the child's own ``VmHWM`` (on Linux a child's ``ru_maxrss`` starts at its
   parent's RSS, so this runs while the parent is small):
   ``explain_dataset`` of the gradient on a small CNN at 32×32 over a ``tf.data`` pipeline that
   makes every image on the fly (``Dataset.range(n).map(stateless_uniform)``: no array of the whole
   dataset anywhere) for 1,000, 5,000 and 20,000 images; printed: peak RSS, the store's size on
   disk, and the ratio 20k / 1k (goal: flat).

    nice python benchmarks/bench_dataset.py            # 3–4 minutes on 2 cores at load 2–4, 6 at load 6
    nice python benchmarks/bench_dataset.py --quick    # about 2 minutes at load 6: fewer images, RSS 1k / 3k
    nice python benchmarks/bench_dataset.py --only throughput   # or: rss
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load():
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _timed_both(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


class Waits:
    """Seconds the caller's thread of ``explain_dataset`` waits for the next batch (the stream) and for the
    writer thread (handing a chunk over, the last commits at the end): what the pipeline fails to hide.
    Wraps the stream's iterator and the runner's writer (private names: skipped if they moved)."""

    def __init__(self):
        from tfattr.streaming import explain, sources

        self.data = self.writer = 0.0
        stream_iter = sources.Stream.__iter__
        waits = self

        def timed_iter(stream):
            iterator = stream_iter(stream)
            while True:
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                finally:
                    waits.data += time.perf_counter() - start
                yield batch

        sources.Stream.__iter__ = timed_iter
        def timed(method):
            def call(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return method(*args, **kwargs)
                finally:
                    waits.writer += time.perf_counter() - start
            return call

        writer = getattr(explain, "_Writer", None)
        for name in ("put", "close") if writer is not None else ():
            setattr(writer, name, timed(getattr(writer, name)))

    def take(self):
        taken = (self.data, self.writer)
        self.data = self.writer = 0.0
        return taken


def folder_size(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


# -- 1. throughput -------------------------------------------------------------------------------------
def make_pngs(folder, n, size, seed=0):
    """``n`` PNG files of smooth random pictures with some noise (PNG sizes like photos', not like noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        coarse = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
        image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 8, (size, size, 3))
        cv2.imwrite(os.path.join(folder, f"img_{i:06d}.png"), np.clip(image, 0, 255).astype(np.uint8))


def _stores(work):
    for entry in os.listdir(work):
        if entry.startswith("store_"):
            shutil.rmtree(os.path.join(work, entry))


def throughput(args):
    import keras
    import tensorflow as tf

    sys.path.insert(0, HERE)
    from bench_engine import small_vgg

    import tfattr
    from tfattr.streaming.sources import decode_image_file, stream
    from tfattr.streaming.store import StoreWriter

    size, batch = 64, args.batch
    model = small_vgg(size)
    work = tempfile.mkdtemp(prefix="bench_dataset_")
    cases = [("IG 32 steps", tfattr.IntegratedGradients(model, steps=32, batch_size=32, verbose=0), args.ig_images),
             ("gradient", tfattr.Gradient(model, batch_size=64, verbose=0), args.grad_images)]
    n_files = max(n for _, _, n in cases)
    folder = os.path.join(work, "pngs")
    start = time.perf_counter()
    make_pngs(folder, n_files, size)
    print(f"\n1. throughput: small VGG-style CNN {size}×{size}, batch (= store chunk) {batch}; "
          f"{n_files} PNG files written in {time.perf_counter() - start:.1f}s "
          f"({folder_size(folder) / n_files / 1024:.1f} KiB each); TensorFlow {tf.__version__}, Keras "
          f"{keras.__version__}, {os.cpu_count()} CPUs; {load()}")
    names = sorted(os.listdir(folder))
    paths = [os.path.join(folder, name) for name in names]
    rows = []

    def subfolder(n):  # a folder of the first n files (hard links)
        sub = os.path.join(work, f"pngs_{n}")
        if not os.path.exists(sub):
            os.makedirs(sub)
            for name in names[:n]:
                os.link(os.path.join(folder, name), os.path.join(sub, name))
        return sub

    def pipeline(n):  # what a user writes: list the files, read and decode them in tf.data
        files = tf.data.Dataset.from_tensor_slices(paths[:n])
        return files.map(lambda p: tf.io.decode_png(tf.io.read_file(p), channels=3),
                         num_parallel_calls=tf.data.AUTOTUNE)

    counter = [0]
    waits = Waits()

    def store_run(method, data, durable=True):
        counter[0] += 1
        out = os.path.join(work, f"store_{counter[0]}")
        tfattr.explain_dataset(method, data, out, batch_size=batch, value_range=(0, 1), verbose=0, durable=durable)
        return out

    try:
        for label, method, n in cases:
            sub = subfolder(n)
            # the preloaded arrays: the same decoding and scaling as the folder source (same bits)
            images = np.stack([decode_image_file(p, value_range=(0, 1)) for p in paths[:n]])
            out_maps = np.empty_like(images)

            def loop(method=method, images=images, out_maps=out_maps):
                for i in range(0, len(images), batch):
                    out_maps[i:i + batch] = method.attribute(images[i:i + batch]).attributions

            runs = [("loop", loop), ("folder", lambda m=method, d=sub: store_run(m, d)),
                    ("tf.data", lambda m=method, n=n: store_run(m, pipeline(n)))]
            if label == "gradient":  # without the fsyncs (atomic against kills, not against power loss)
                runs.append(("folder, durable=False", lambda m=method, d=sub: store_run(m, d, durable=False)))
            # warm-up (tracing, tf.data, zarr and pyarrow first calls) on a few images
            warm = batch if label == "gradient" else 2
            method.attribute(images[:warm])
            store_run(method, subfolder(warm))
            store_run(method, pipeline(warm))
            _stores(work)
            results = {}
            waits.take()
            for r in range(args.repeats):
                for kind, fn in runs:
                    wall, cpu = _timed_both(fn)
                    results.setdefault(kind, []).append((wall, cpu) + waits.take())
                    if r < args.repeats - 1:
                        _stores(work)
            same = all(np.array_equal(np.asarray(tfattr.open_explanations(os.path.join(work, entry)).attributions[:]),
                                      out_maps) for entry in os.listdir(work) if entry.startswith("store_"))
            _stores(work)
            best = {kind: (min(r[0] for r in t), min(r[1] for r in t)) for kind, t in results.items()}
            print(f"\n{label}, {n} images ({n // batch} batches), best of {args.repeats}; {load()}; "
                  f"stores == loop bit for bit: {same}")
            print(f"{'run':>22} {'wall s':>8} {'images/s':>9} {'CPU s':>8} {'thr. ratio':>11} {'CPU ratio':>10}")
            for kind, (wall, cpu) in best.items():
                ratio, cpu_ratio = best["loop"][0] / wall, best["loop"][1] / cpu
                print(f"{kind:>22} {wall:>8.2f} {n / wall:>9.1f} {cpu:>8.2f} {ratio:>11.3f} {cpu_ratio:>10.3f}")
                if kind != "loop":
                    rows.append((label, kind, n, ratio, cpu_ratio))
            print("the caller's thread waited (each timed run, s): " + "; ".join(
                f"{kind}: " + ", ".join(f"data {r[2]:.2f} + writer {r[3]:.2f} of {r[0]:.1f}" for r in t)
                for kind, t in results.items() if kind != "loop"))
            if label == "gradient":  # where the extra CPU goes: decoding alone, writing alone
                def decode_all(data):
                    return [None for _ in stream(data, batch=batch, value_range=(0, 1))]

                decode = _timed_both(lambda d=sub: decode_all(d))
                decode_tfdata = _timed_both(lambda n=n: decode_all(pipeline(n)))

                def write(maps=out_maps, n=n):
                    with StoreWriter.open(os.path.join(work, "store_w"), {"bench": 1}, batch, n) as writer:
                        for k, i in enumerate(range(0, n, batch)):
                            m = len(maps[i:i + batch])
                            writer.write_chunk(k, i, names[i:i + batch],
                                               {"attributions": maps[i:i + batch],
                                                "targets": np.zeros(m, np.int32), "scores": np.zeros(m),
                                                "delta": np.full(m, np.nan), "valid": np.ones(m, bool)},
                                               [{"id": name, "index": i + j, "status": "ok"}
                                                for j, name in enumerate(names[i:i + batch])])
                        writer.finish(n)

                written = _timed_both(write)
                _stores(work)
                print(f"alone, CPU s (wall s): decoding the folder {decode[1]:.2f} ({decode[0]:.2f}), the tf.data "
                      f"pipeline {decode_tfdata[1]:.2f} ({decode_tfdata[0]:.2f}); writing the store "
                      f"{written[1]:.2f} ({written[0]:.2f}); loop / (loop + decode + write) = "
                      f"{best['loop'][1] / (best['loop'][1] + decode[1] + written[1]):.3f} (folder)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


# -- 2. peak memory ------------------------------------------------------------------------------------
def _vm_hwm_mib():
    """The peak resident size of this process's own memory map (``VmHWM``; Linux), MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(n, out, batch):
    """One run in this (child) process; prints a JSON line with its time and its own peak RSS."""
    import tensorflow as tf

    sys.path.insert(0, HERE)
    from bench_engine import small_vgg

    import tfattr

    size = 32
    model = small_vgg(size)
    method = tfattr.Gradient(model, batch_size=64, verbose=0)

    def image(i):
        return tf.random.stateless_uniform((size, size, 3), seed=tf.stack([i, tf.constant(7, tf.int64)]))

    data = tf.data.Dataset.range(n).map(image, num_parallel_calls=tf.data.AUTOTUNE)
    start = time.perf_counter()
    store = tfattr.explain_dataset(method, data, out, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"n": len(store), "seconds": seconds, "complete": bool(store.complete),
                      "vm_hwm_mib": _vm_hwm_mib()}), flush=True)


def rss(args):
    """Run before anything big is loaded here: on Linux a child's ``ru_maxrss`` is at least the parent's
    RSS when it was started (``exec`` keeps the old memory map's high-water mark), so the child's own
    ``VmHWM`` is printed beside it."""
    sizes = args.rss_sizes
    print(f"\n2. peak RSS: gradient, small CNN 32×32, images made on the fly in tf.data, batch {args.batch}; "
          f"each run in its own process; {load()}")
    print(f"{'images':>7} {'ru_maxrss MiB':>14} {'VmHWM MiB':>10} {'seconds':>8} {'images/s':>9} "
          f"{'store MiB':>10}  load")
    work = tempfile.mkdtemp(prefix="bench_dataset_rss_")
    peaks = {}
    try:
        for n in sizes:
            out = os.path.join(work, f"store_{n}")
            child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--rss-child", str(n), out,
                                      "--batch", str(args.batch)], stdout=subprocess.PIPE, text=True)
            stdout = child.stdout.read()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                raise SystemExit(f"the run of {n} images failed (exit {child.returncode})")
            report = json.loads(stdout.strip().splitlines()[-1])
            assert report["n"] == n and report["complete"], report
            peaks[n] = usage.ru_maxrss / 1024, report["vm_hwm_mib"]  # ru_maxrss: KiB on Linux
            print(f"{n:>7} {peaks[n][0]:>14.0f} {peaks[n][1]:>10.0f} {report['seconds']:>8.1f} "
                  f"{n / report['seconds']:>9.0f} {folder_size(out) / 2**20:>10.0f}  {load()}")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = min(sizes), max(sizes)
    for what, j in (("ru_maxrss", 0), ("VmHWM", 1)):
        print(f"peak RSS ({what}) {large} / {small} images: {peaks[large][j]:.0f} / {peaks[small][j]:.0f} MiB = "
              f"{peaks[large][j] / peaks[small][j]:.3f} ({peaks[large][j] - peaks[small][j]:+.0f} MiB; goal: flat)")
    return peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images; RSS at 1,000 and 4,000 images")
    parser.add_argument("--only", nargs="+", choices=("throughput", "rss"), default=("throughput", "rss"))
    parser.add_argument("--batch", type=int, default=64, help="images per batch and per store chunk")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds after the warm-up (default 2; 1 quick)")
    parser.add_argument("--rss-child", nargs=2, metavar=("N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1], args.batch)
        return
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.ig_images = 64 if args.quick else 128
    args.grad_images = 512 if args.quick else 1024
    args.rss_sizes = (1000, 3000) if args.quick else (1000, 5000, 20000)
    start = time.perf_counter()
    if "rss" in args.only:  # first: this process is still small (see rss())
        rss(args)
    if "throughput" in args.only:
        throughput(args)
    print(f"\ntotal {time.perf_counter() - start:.0f}s; {load()}")


if __name__ == "__main__":
    main()
