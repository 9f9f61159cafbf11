"""Build of tropic's optional compiled CPU kernels (everything else is in pyproject.toml).

The kernels are plain C called through ctypes (which releases the GIL during a call). Each is built
as an extension module so that ``pip install`` compiles it with the machine's compiler; ``optional``
means a failed build leaves tropic working on its NumPy path (``python -m tropic info`` says so).
No ``-march=native``: the sources pick AVX2 code at run time with ``__builtin_cpu_supports``.
"""

from setuptools import Extension, setup

_FLAGS = ["-O3", "-std=c11", "-fopenmp", "-fno-math-errno", "-Wall"]


def _kernel(name: str) -> Extension:
    return Extension(
        f"tropic.backends.numpy._{name}",
        sources=[f"tropic/backends/numpy/csrc/{name}.c"],
        # headers shared by the kernels: half-precision rounding, the task pool
        depends=[f"tropic/backends/numpy/csrc/{h}.h" for h in ("half_rounding", "thread_pool")],
        extra_compile_args=_FLAGS,
        extra_link_args=["-fopenmp"],
        optional=True,
    )


setup(ext_modules=[_kernel("matmul_c"), _kernel("morphology_c"), _kernel("scatter_c"), _kernel("geodesic_c")])
