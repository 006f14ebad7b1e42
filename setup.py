import platform

from setuptools import Extension, setup

# kaf._records joins the data of a reply's records in one C call (see
# kaf/_records.c).  Optional: without a C compiler, or on PyPy (whose JIT
# runs the Python that does the same), Kaf installs and runs without it.
extensions = []
if platform.python_implementation() == "CPython":
    extensions.append(Extension("kaf._records", ["kaf/_records.c"], optional=True))

setup(ext_modules=extensions)
