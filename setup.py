"""Installs the `lastreid` package (projects/LaST/lastreid) and compiles fastreid's
Cython rank evaluator into it.

fastreid 1.4.0 ships `rank_cy.pyx` / `roc_cy.pyx` uncompiled and runs `make` inside
site-packages the first time an evaluator is built (exiting the process if that fails).
We compile the same sources here, at install time, into `lastreid._cylib`, and
`lastreid.compat` registers the result under fastreid's module names, so site-packages
is never written to. fastreid must therefore be installed before this package
(the Makefile does that, with --no-deps) and the build must not be isolated.
"""

import importlib.util
import os
import shutil

from setuptools import find_packages, setup

PACKAGE_ROOT = os.path.join("projects", "LaST")
CYLIB_SOURCES = ("rank_cy", "roc_cy")


def fastreid_cython_extensions():
    spec = importlib.util.find_spec("fastreid")
    if spec is None:
        raise SystemExit(
            "setup.py: fastreid is not installed; run `pip install --no-deps fastreid==1.4.0` "
            "first (the Makefile does this), then install this package with --no-build-isolation"
        )
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Extension

    cylib = os.path.join(os.path.dirname(spec.origin), "evaluation", "rank_cylib")
    # Copy the .pyx files into our build tree so that Cython writes its .c output there
    # and not next to the installed sources.
    work = os.path.join("build", "cylib")
    os.makedirs(work, exist_ok=True)
    extensions = []
    for name in CYLIB_SOURCES:
        src = os.path.join(work, name + ".pyx")
        shutil.copyfile(os.path.join(cylib, name + ".pyx"), src)
        extensions.append(
            Extension("lastreid._cylib." + name, [src], include_dirs=[np.get_include()])
        )
    return cythonize(extensions, language_level=3, quiet=True)


setup(
    name="lastreid",
    version="0.1.0",
    description="LaST person re-identification benchmark as a fast-reid plugin",
    package_dir={"": PACKAGE_ROOT},
    packages=find_packages(PACKAGE_ROOT),
    ext_modules=fastreid_cython_extensions(),
    python_requires=">=3.11, <3.14",  # the Makefile's PYTHON_VERSIONS
    zip_safe=False,
)
