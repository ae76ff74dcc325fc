"""Beam DirectRunner with 2 worker processes vs the local in-process run, on the same image files.

The issue's goal: ExplainImages on the DirectRunner with 2 workers on 2 cores within 1.3× of the local
run (Beam's documented overhead: worker start-up, each worker importing TensorFlow and loading the
model, pickling the rows through the shuffle). Both write the same store (IG, a small CNN with non-zero
biases, PNG files); timed from the call to the finished store, fresh ``out`` each time:

* ``local loop``: this process reads and decodes the files (:func:`tfattr.streaming.sources.decode_image_file`),
  explains each chunk with one ``attribute`` call and writes it with :class:`~tfattr.streaming.store.StoreWriter`;
* ``explain_dataset``: the local runner (:func:`tfattr.streaming.explain.explain_dataset`), if it runs;
* ``beam 2 workers``: ``ExplainImages`` with ``direct_num_workers=2, direct_running_mode="multi_processing"``.

Printed: seconds, images/s and the ratio beam / local (goal ≤ 1.3).

    python benchmarks/bench_beam.py                       # 2000 images of 32×32, IG 32 steps
    python benchmarks/bench_beam.py --images 400 --steps 8  # quick

Measured (2 cores shared with other sessions, load average 5–9, so the rows are noisy and 2 worker
processes get a larger share of a contended CPU than one):

    --images 6000 --steps 64:  local loop 88.3 s, explain_dataset 64.3 s, beam 2 workers 55.4 s
                               ratio beam / explain_dataset 0.86
    --images 2000 --steps 32:  local loop 14.0 s, explain_dataset 21.3 s, beam 2 workers 39.4 s
                               ratio beam / explain_dataset 1.85
    --images 400 --steps 8:    local loop 2.5 s, explain_dataset 1.4 s, beam 2 workers 24.1 s

Beam's cost is mostly fixed (~20–25 s here: the runner starting, each worker importing TensorFlow and
tfattr and loading the model, the first traced call per worker); past it the two workers keep pace
with the local run, so the 1.3× goal holds for runs of about a minute and more, not for small ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def make_data(root: str, n: int, side: int, seed: int = 0):
    """``n`` random RGB PNG files and a small CNN (non-zero biases) saved as .keras under ``root``."""
    import cv2
    import keras

    folder = os.path.join(root, "images")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f"im{i:05d}.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((side, side, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", bias_initializer="random_normal"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu", bias_initializer="random_normal"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, bias_initializer="random_normal"),
    ])
    path = os.path.join(root, "cnn.keras")
    model.save(path)
    return folder, path


def local_loop(folder, model_path, out, steps, chunk, engine):
    """Decode, attribute chunk by chunk, write the store: the plain in-process loop."""
    import tfattr
    from tfattr.beam import load_model
    from tfattr.streaming.sources import decode_image_file
    from tfattr.streaming.store import StoreWriter

    model = load_model(model_path)
    method = tfattr.IntegratedGradients(model, steps=steps, batch_size=engine, verbose=0)
    names = sorted(os.listdir(folder))
    with StoreWriter.open(out, {"bench": "local"}, chunk, len(names)) as writer:
        for k in range(0, -(-len(names) // chunk)):
            ids = names[k * chunk:(k + 1) * chunk]
            x = np.stack([decode_image_file(os.path.join(folder, name), value_range=(0.0, 1.0)) for name in ids])
            e = method.attribute(x)
            writer.write_chunk(k, k * chunk, ids, {"attributions": e.attributions, "targets": e.targets,
                                                   "scores": e.scores, "delta": e.delta}, None)
        writer.finish(len(names))


def beam_run(folder, model_path, out, steps, chunk, engine, workers):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfattr.beam import ExplainImages

    options = PipelineOptions(direct_num_workers=workers, direct_running_mode="multi_processing")
    with beam.Pipeline(options=options) as pipeline:
        _ = pipeline | ExplainImages(folder, out, "ig", model_path, {"steps": steps, "batch_size": engine},
                                     chunk=chunk)


def runner_run(folder, model_path, out, steps, chunk, engine):
    from tfattr.beam import load_model
    from tfattr.streaming.explain import explain_dataset

    explain_dataset("ig", folder, out, model=load_model(model_path), method_options={"steps": steps,
                    "batch_size": engine}, batch_size=chunk, verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--engine", type=int, default=64, help="engine points per pass (fixed: same kernels)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_beam_")
    try:
        folder, model_path = make_data(root, args.images, args.side)
        print(f"{args.images} PNG files {args.side}×{args.side}, IG {args.steps} steps, chunk {args.chunk}, "
              f"engine {args.engine}, {os.cpu_count()} cores")
        times = {}
        runs = [("local loop", lambda out: local_loop(folder, model_path, out, args.steps, args.chunk, args.engine)),
                ("explain_dataset", lambda out: runner_run(folder, model_path, out, args.steps, args.chunk,
                                                           args.engine)),
                (f"beam {args.workers} workers", lambda out: beam_run(folder, model_path, out, args.steps, args.chunk,
                                                                      args.engine, args.workers))]
        for name, run in runs:
            out = os.path.join(root, name.replace(" ", "_"))
            begin = time.perf_counter()
            try:
                run(out)
            except Exception as error:  # noqa: BLE001 - a benchmark row that cannot run says why
                print(f"{name:>18}: not run ({type(error).__name__}: {str(error).splitlines()[0][:100]})")
                continue
            times[name] = time.perf_counter() - begin
            print(f"{name:>18}: {times[name]:7.1f} s  {args.images / times[name]:7.1f} images/s", flush=True)
        beam_time = times.get(f"beam {args.workers} workers")
        for name in ("local loop", "explain_dataset"):
            if beam_time and name in times:
                print(f"ratio beam / {name}: {beam_time / times[name]:.2f} (goal ≤ 1.3)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
