"""The torch kernels registered with ``tropic.core.dispatch``: core's public functions, given torch
tensors, check and normalise the arguments (with torch operations, so autograd follows them) and call
these, which check the tensors' devices (CPU, or CUDA with the CuPy backend available), call the custom
ops of :mod:`.ops` and return their (differentiable) outputs."""

from __future__ import annotations

from tropic.core.dispatch import register

from . import ops

# Each tensor on a device the ops run on, checked here too so that the error comes before the op is
# called (and at trace time under torch.compile). Core has already refused a forward operator's
# operands on different devices; the ops' CUDA kernels refuse any mix they get.
_check_devices = ops.check_devices


@register("torch", "matmul")
def matmul(xp, semiring, a, b):
    _check_devices(a=a, b=b)
    return ops.matmul(a, b, semiring.maximises)


@register("torch", "matmul_vjp")
def matmul_vjp(xp, grad, indices, a_shape, b_shape):
    _check_devices(grad=grad, indices=indices)
    return ops.matmul_backward(grad, indices, list(a_shape), list(b_shape))


@register("torch", "morphology")
def morphology(xp, semiring, image, weights, support, row_window, col_window, fill):
    _check_devices(image=image, structure=weights)
    # Core hands erosion the negated structure; the op takes the structure itself (negation is exact,
    # so -(-s) is s bitwise) and autograd's two negations give back the op's ``0.0 - g`` exactly.
    structure = weights if weights is None or semiring.maximises else -weights
    window = [len(support), len(support[0]), row_window.centre, col_window.centre]
    bits = [bit for row in support for bit in row]
    return ops.morphology(image, structure, bits, window, semiring.maximises, row_window.mode, float(fill))


morphology.host_footprint = True  # core passes the footprint as rows of Python bools


@register("torch", "morphology_vjp")
def morphology_vjp(xp, grad, indices, image_shape, row_window, col_window):
    _check_devices(grad=grad, indices=indices)
    window = [row_window.start.size, col_window.start.size, row_window.centre, col_window.centre]
    return ops.morphology_backward(
        grad, indices, list(image_shape), window, row_window.reflected, row_window.mode
    )


@register("torch", "conv2d")
def conv2d(xp, semiring, x, w, geometry):
    _check_devices(x=x, w=w)
    return ops.conv2d(
        x, w, list(geometry.stride), list(geometry.padding), geometry.groups, semiring.maximises
    )


@register("torch", "conv2d_vjp")
def conv2d_vjp(xp, grad, indices, geometry):
    _check_devices(grad=grad, indices=indices)
    g = geometry
    return ops.conv2d_backward(
        grad, indices, list(g.x_shape), list(g.w_shape), list(g.stride), list(g.padding), g.groups
    )


@register("torch", "maxout")
def maxout(xp, grouped):
    _check_devices(x=grouped)
    return ops.maxout(grouped)


@register("torch", "maxout_vjp")
def maxout_vjp(xp, grad, indices, pieces):
    _check_devices(grad=grad, indices=indices)
    return ops.maxout_backward(grad, indices, pieces)
