"""The RMSprop arithmetic: the one place where the update math lives.

Every preset, the sparse rows and the stateful ``RMSprop`` call :func:`rmsprop_step`. It evaluates
in the frameworks' order so that float32 results agree to the last bit: ``lr * g`` before the
division (TF's ``lr_t * grad / denom``), a division by the square root, never XLA's ``rsqrt``
(:func:`exact_sqrt`), and each product rounded before its sum, never contracted into a fused
multiply-add (:func:`rounded`). The guards are few, one ``is_finite(g)`` per leaf serving all:
XLA:CPU's compile time grows faster than linearly in a program's operation count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import Array, lax


class Hyperparams(NamedTuple):
    """Per-step scalar hyperparameters, already resolved against the step count."""

    learning_rate: Array
    rho: Array
    momentum: Array
    epsilon: Array
    decay: Array
    weight_decay: Array
    step: Array  # updates applied so far (t), for the inverse-time ``decay``


class Rule(NamedTuple):
    """Which framework's arithmetic runs, chosen by a preset (hashable: static under jit).

    Each field is one way the frameworks differ; ``None``: decided by the momentum slot (TF 2.x).
    """

    framework: str = "rmsprop"  # the name in error messages ("compat.torch", ...)
    arg_names: tuple[tuple[str, str], ...] = ()  # (core name, framework's name): ("rho", "alpha")
    eps_in_sqrt: bool | None = None  # sqrt(v + ε), else sqrt(v) + ε
    fused_order: bool | None = None  # TF's fused kernels' rms + (|g|² − rms)·(1−ρ)
    momentum_slot: bool | None = None  # True: always (TF1); None: unless momentum is a literal 0
    lr_in_momentum: bool = True  # lr inside the momentum buffer (TF, Keras, optax), else PyTorch's
    # "none"; "coupled": g ← g + wd·p (PyTorch); "decoupled": p ← p − p·wd·lr first (Keras 3)
    weight_decay: str = "none"
    maximize: bool = False  # ascend (PyTorch)
    # 1 − ρ from the Python number in double (Keras 3, PyTorch), else in the compute dtype (TF)
    one_minus_rho_in_double: bool = False
    # names that TF stores as float32 first, so a float64 variable sees the float32-rounded value
    float32_hyperparameters: frozenset[str] = frozenset()
    initial_rms: float = 0.0  # the rms slot's starting value (TF1: 1.0)
    # a complex parameter is two real ones (PyTorch's view_as_real), not one value with |g|²
    complex_as_real: bool = False
    # rms gains ((1−ρ)·g)·g (PyTorch's addcmul_: no overflow before |g|² does), not (1−ρ)·(g·g)
    scaled_gradient_squared: bool = False

    def user_name(self, name: str) -> str:
        """The argument's name as the framework (and so the user) writes it."""
        return dict(self.arg_names).get(name, name)

    def variant(self, has_momentum_slot: bool, epsilon_nonzero: bool = False) -> Variant:
        """The formula for a state with (or without) a momentum slot."""
        return Variant(
            eps_in_sqrt=has_momentum_slot if self.eps_in_sqrt is None else self.eps_in_sqrt,
            fused_order=has_momentum_slot if self.fused_order is None else self.fused_order,
            lr_in_momentum=self.lr_in_momentum,
            decoupled_weight_decay=self.weight_decay == "decoupled",
            maximize=self.maximize,
            epsilon_nonzero=epsilon_nonzero,
            scaled_gradient_squared=self.scaled_gradient_squared,
        )


class Variant(NamedTuple):
    """The resolved formula of one update (static: selects code, not values)."""

    eps_in_sqrt: bool
    fused_order: bool  # the order of TF's fused ApplyRMSProp kernels
    lr_in_momentum: bool
    decoupled_weight_decay: bool
    maximize: bool
    sparse_fused_order: bool = False  # the order of TF's SparseApplyRMSProp kernels (lazy rows)
    epsilon_nonzero: bool = False  # sqrt(v) + ε cannot be simplified into a bare square root
    scaled_gradient_squared: bool = False  # see Rule


def compute_dtype(*dtypes: Any) -> jnp.dtype:
    """The inputs' promoted dtype, at least float32 (ε would underflow in 16 bits), complex kept;
    ``None`` entries are skipped."""
    width, is_complex = 4, False  # bytes of the real part
    for d in (jnp.dtype(d) for d in dtypes if d is not None):
        is_complex = is_complex or jnp.issubdtype(d, jnp.complexfloating)
        if jnp.issubdtype(d, jnp.inexact):
            width = max(width, real_dtype(d).itemsize)
    if is_complex:
        return jnp.dtype(jnp.complex128 if width >= 8 else jnp.complex64)
    return jnp.dtype(jnp.float64 if width >= 8 else jnp.float32)


def real_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The real dtype matching ``dtype`` (``complex64`` -> ``float32``)."""
    return jnp.finfo(dtype).dtype


def exact_sqrt(x: Array) -> Array:
    """``sqrt(x)``, kept a square root as a divisor: XLA rewrites ``a / sqrt(b)`` into the
    incorrectly rounded ``a * rsqrt(b)``; a ``reduce_precision`` to ``x``'s own format (the
    identity, fused into the loop) hides the ``sqrt`` from that pattern."""
    root = jnp.sqrt(x)
    info = jnp.finfo(root.dtype)
    return lax.reduce_precision(root, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def rounded(x: Array, finite: Array | None = None) -> Array:
    """``x``, rounded to its dtype before it enters a sum.

    LLVM contracts ``a*b + c`` into one fused multiply-add, which rounds once where TF's kernels
    round twice. A select LLVM cannot prove trivial keeps the product a value of its own:
    ``is_finite(x)`` is undecidable for a product that may overflow, and ``x + x`` is ``x`` for
    ±inf and NaN (``x < inf`` is folded; ``reduce_precision`` emits nothing on CPU). ``finite``:
    a shared condition, False only where ``x`` or its sum is not finite (``is_finite(g)``).
    """
    if jnp.iscomplexobj(x):
        return lax.complex(rounded(jnp.real(x)), rounded(jnp.imag(x)))
    return lax.select(lax.is_finite(x) if finite is None else finite, x, lax.add(x, x))


def rounded_where_it_counts(x: Array, finite: Array | None, elsewhere: Array) -> Array:
    """:func:`rounded` in one select, for a product that does not matter where ``finite`` is
    False (the step is NaN there). ``elsewhere`` is best a loop input (a slot, the parameter): a
    computed value given a second user is written by XLA:CPU to a leaf-sized temporary."""
    if finite is None or jnp.iscomplexobj(x):
        return rounded(x, finite)
    return lax.select(finite, x, elsewhere)


def sum_of_products(a: Array, b: Array, finite: Array | None) -> Array:
    """``a + b`` of two products, each rounded, in four operations instead of seven: with
    ``s = a + b``, ``select(finite, a, s) + select(finite, b, s)`` is TF's twice-rounded sum, or
    ``s + s`` (the same inf or NaN) where ``a + b`` cannot be finite."""
    if finite is None or jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return rounded(a) + rounded(b)
    s = a + b
    return lax.add(lax.select(finite, a, s), lax.select(finite, b, s))


def abs_sq(x: Array, finite: Array | None = None) -> Array:
    """``|x|²`` as a real array (``re² + im²`` for complex), rounded."""
    if jnp.iscomplexobj(x):
        return rounded(jnp.real(x) ** 2) + rounded(jnp.imag(x) ** 2)
    return rounded(x * x, finite)


class Scalars(NamedTuple):
    """The per-step scalars in one real dtype, shared by every leaf of that dtype."""

    lr: Array  # learning_rate / (1 + decay·t)
    rho: Array
    one_minus_rho: Array
    momentum: Array
    epsilon: Array
    weight_decay: Array
    minus_lr: Array  # −lr, negated once per step rather than in every leaf


def resolve(hp: Hyperparams, one_minus_rho: Array | None, dtype: jnp.dtype, rule: Rule) -> Scalars:
    """The hyperparameters in the real dtype of ``dtype``, with Keras's ``decay`` applied.

    ``rule.float32_hyperparameters`` pass through float32 first, as TF stores them.
    ``one_minus_rho``: ``1 − ρ`` already computed in double (Keras 3, PyTorch), or None.
    """
    rdtype = real_dtype(dtype)

    def cast(name: str, h: Array) -> Array:
        h = jnp.asarray(h)
        return (h.astype(jnp.float32) if name in rule.float32_hyperparameters else h).astype(rdtype)

    names = Hyperparams._fields[:6]
    lr, rho, mu, eps, decay, wd = (cast(n, h) for n, h in zip(names, hp[:6], strict=True))
    one = jnp.asarray(1, rdtype)
    if isinstance(hp.decay, (int, float)) and hp.decay == 0:
        # lr / (1 + 0·t) is lr: left out, the rate stays a constant XLA folds (faster to compile)
        lr_t = lr
    else:
        # t is not provably finite to LLVM (a negative count selects inf, then t = 0), which
        # could otherwise rewrite lr / (1 + decay·t) with constant lr and decay, rounding unlike TF
        step = jnp.asarray(hp.step)
        t = jnp.where(step >= 0, step.astype(rdtype), jnp.asarray(jnp.inf, rdtype))
        lr_t = lr / (one + jnp.where(hp.step >= 0, rounded(decay * t), 0))
    one_minus = one - rho if one_minus_rho is None else cast("", one_minus_rho)
    return Scalars(lr_t, rho, one_minus, mu, eps, wd, minus_lr=-lr_t)


def effective_gradient(
    grad: Array, param: Array | None, sc: Scalars, variant: Variant, dtype: Any
) -> Array:
    """``g`` in the compute dtype, negated for ``maximize``, plus ``wd·p`` for coupled decay."""
    g = grad.astype(dtype)
    if variant.maximize:
        g = -g
    if param is not None and not variant.decoupled_weight_decay:
        g = g + rounded(sc.weight_decay.astype(g.dtype) * param.astype(g.dtype))
    return g


def moment_increments(
    g: Array, sc: Scalars, centered: bool, guard: bool = True, scaled: bool = False
) -> tuple[Array, Array | None]:
    """``((1−ρ)·|g|², (1−ρ)·g if centered)``; ``scaled``: ``((1−ρ)·g)·g`` (PyTorch's order)."""
    if scaled:
        rms_inc = (sc.one_minus_rho.astype(g.dtype) * g) * g
    else:
        rms_inc = sc.one_minus_rho * (abs_sq(g) if jnp.iscomplexobj(g) else g * g)
    mg_inc = sc.one_minus_rho.astype(g.dtype) * g if centered else None
    if not guard:
        return rms_inc, mg_inc
    return rounded(rms_inc), None if mg_inc is None else rounded(mg_inc)


def update_moments(
    g: Array,
    rms: Array,
    mg: Array | None,
    sc: Scalars,
    variant: Variant,
    finite: Array | None = None,
) -> tuple[Array, Array | None]:
    """The new ``rms`` (and ``mg``) in the compute dtypes::

    rms = ρ·rms + (1−ρ)·|g|²       fused order: rms + (|g|² − rms)·(1−ρ)
    mg  = ρ·mg + (1−ρ)·g           fused order: mg + (g − mg)·(1−ρ)      (centered only)
    """
    rdtype = sc.rho.dtype
    if variant.fused_order:
        rms_old = rms.astype(rdtype)
        rms_new = rms_old + rounded((abs_sq(g, finite) - rms_old) * sc.one_minus_rho, finite)
        if mg is None:
            return rms_new, None
        mg_old = mg.astype(g.dtype)
        mg_inc = rounded((g - mg_old) * sc.one_minus_rho.astype(g.dtype), finite)
        return rms_new, mg_old + mg_inc
    rms_inc, mg_inc = moment_increments(
        g, sc, centered=mg is not None, guard=False, scaled=variant.scaled_gradient_squared
    )
    rms_new = sum_of_products(sc.rho * rms.astype(rdtype), rms_inc, finite)
    if mg is None or mg_inc is None:
        return rms_new, None
    return rms_new, sum_of_products(sc.rho.astype(g.dtype) * mg.astype(g.dtype), mg_inc, finite)


def step_from_moments(
    g: Array,
    param: Array | None,
    rms: Array,
    mg: Array | None,
    mom: Array | None,
    sc: Scalars,
    variant: Variant,
    negate: bool = False,
    finite: Array | None = None,
) -> tuple[Array, Array | None]:
    """The parameter step from the *updated* moments, and the new momentum buffer::

    v     = rms − |mg|²   (centered)   or   rms
    denom = sqrt(v + ε)   (ε inside)   or   sqrt(v) + ε
    step  = lr·g / denom  (lr inside the buffer, or no buffer)   or   g / denom
    mom   = μ·mom + step  (momentum slot)  ;  delta = mom   or   step
    delta = lr·mom        (lr outside the buffer, PyTorch)
    p − delta is then rounded after p − (p·wd)·lr  (decoupled weight decay)

    Returns ``(delta, mom)``, ``delta`` to *subtract* from the parameter; with ``negate``, the
    update to *add*. The sign then goes on the scalar ``lr`` where ``lr`` is a factor of the
    result (``(−lr)·g / denom`` is ``−(lr·g / denom)`` bit for bit, with no per-element cost).
    """
    cdtype = g.dtype
    lr, eps, mu = sc.lr, sc.epsilon, sc.momentum
    sign_on_lr = negate and mom is None and not variant.decoupled_weight_decay
    if sign_on_lr:
        lr = sc.minus_lr
    mg_sq = None  # |mg|² of the variance rms − |mg|²
    if mg is not None and jnp.iscomplexobj(mg):
        mg_sq = abs_sq(mg)
    elif mg is not None:
        mg_sq = rounded_where_it_counts(mg * mg, finite, rms.astype(mg.dtype))
    if variant.sparse_fused_order:
        # SparseApply(Centered)RMSProp: denom = (ms + ε) − mg², mom = mom·μ + (rsqrt(denom)·lr)·g
        inner = rms + eps if mg_sq is None else (rms + eps) - mg_sq
        inv_root = jnp.asarray(1, inner.dtype) / exact_sqrt(inner)
        step = rounded(rounded(inv_root.astype(cdtype) * lr.astype(cdtype)) * g)
    else:
        variance = rms if mg_sq is None else rms - mg_sq
        if variant.eps_in_sqrt:
            denom = exact_sqrt(variance + eps)
        elif variant.epsilon_nonzero:  # XLA rewrites only a bare square root into rsqrt
            denom = jnp.sqrt(variance) + eps
        else:
            denom = exact_sqrt(variance) + eps
        # lr in the numerator, as PyTorch's p.addcdiv_(g, avg, value=−lr) has it without a buffer
        lr_in_numerator = variant.lr_in_momentum or mom is None
        numerator = lr.astype(cdtype) * g if lr_in_numerator else g
        step = numerator / denom.astype(cdtype)
    mom_new = None
    delta = step
    if mom is not None:
        # The guard's other branch is the slot, an input of the loop: ``step`` there would have
        # two users, and XLA:CPU would write it to a leaf-sized temporary.
        mom_in = mom.astype(cdtype)
        mom_new = rounded_where_it_counts(mu.astype(cdtype) * mom_in, finite, mom_in) + step
        delta = mom_new
        if not variant.lr_in_momentum:
            # PyTorch's p.add_(buf, alpha=−lr), rounded on its own so that a caller's p + update
            # in the same jit is not contracted (torch's own vectorised add is an FMA: float32
            # rounding, not bit for bit)
            delta = rounded_where_it_counts(lr.astype(cdtype) * delta, finite, delta)
    if param is not None and variant.decoupled_weight_decay:
        # Keras 3: p ← p − (p·wd)·lr, then p ← p − step, each rounded (p·wd on its own: XLA
        # folds (p·c1)·c2 into p·(c1·c2) for constants). p − p_new is exact (Sterbenz).
        p = param.astype(cdtype)
        p_wd = rounded_where_it_counts(p * sc.weight_decay.astype(cdtype), finite, p)
        decayed_p = p - rounded_where_it_counts(p_wd * lr.astype(cdtype), finite, p)
        delta = p - (decayed_p - delta)
    if negate and not sign_on_lr:
        delta = -delta
    return delta, mom_new


def rmsprop_step(
    grad: Array,
    param: Array | None,
    rms: Array,
    mom: Array | None,
    mg: Array | None,
    sc: Scalars,
    variant: Variant,
    dtype: Any,
    negate: bool = False,
) -> tuple[Array, Array, Array | None, Array | None]:
    """One RMSprop step on matching arrays (whole leaves or gathered rows).

    :func:`effective_gradient`, then :func:`update_moments`, then :func:`step_from_moments`, in
    ``dtype`` (:func:`compute_dtype`) with the scalars ``sc`` (:func:`resolve`). ``param`` is read
    for weight decay only; ``mom`` and ``mg`` are None without their slots.

    Returns:
      ``(delta, rms, mom, mg)``: the amount to *subtract* from the parameter (with ``negate``,
      the update to *add*) in ``dtype``, and the new slots, each in its input dtype.
    """
    g = effective_gradient(grad, param, sc, variant, dtype)
    # One condition for the guards of every product that a non-finite g makes infinite or NaN:
    # |g|², the increments, |mg|², and μ·mom (whose sum with the then-NaN step is NaN anyway).
    finite = None if jnp.iscomplexobj(g) else lax.is_finite(g)
    rms_new, mg_new = update_moments(g, rms, mg, sc, variant, finite)
    delta, mom_new = step_from_moments(g, param, rms_new, mg_new, mom, sc, variant, negate, finite)
    mom_out = None if mom_new is None or mom is None else mom_new.astype(mom.dtype)
    mg_out = None if mg_new is None or mg is None else mg_new.astype(mg.dtype)
    return delta, rms_new.astype(rms.dtype), mom_out, mg_out
