"""The demo: explain real images with every tfattr method; write pictures and a metrics table.

The code is :mod:`tfattr.demo` (it ships with the package, so ``tfattr demo`` runs from any folder
after ``pip install tfattr``); this script is the checkout's way to call it, as ``make demo`` does:

    python examples/demo.py [--out outputs/demo] [--images 6] [--photos chelsea,coffee,rocket,camera]
                            [--protocol demo|paper|quick] [--methods 'IG zero,Grad-CAM'] [--no-digits]
"""

from tfattr.demo import main

if __name__ == "__main__":
    main()
