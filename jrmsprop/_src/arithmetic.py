"""The RMSprop arithmetic: the one place where the update math lives.

Every variant of jrmsprop -- the Keras 2 default, the Keras 3 / PyTorch / TF1 presets, the sparse
row path and the stateful ``RMSprop`` wrapper -- calls :func:`rmsprop_step`. It works on whole
arrays (dense gradients) and on gathered rows (sparse gradients) alike.

The expressions are written in the order the reference frameworks evaluate them, so that float32
results agree to the last bit where the frameworks' kernels allow it:

* ``lr * g`` is formed before the division (TF ``lr_t * grad / denom``);
* ``x / sqrt(y)`` is protected against XLA's rewrite into ``x * rsqrt(y)`` (which rounds
  differently in about 40% of float32 elements), see :func:`exact_sqrt`;
* every product that feeds a sum is rounded on its own (:func:`rounded`,
  :func:`sum_of_products`), as the frameworks' separate multiply and add kernels do, instead of
  being contracted into a fused multiply-add.

These guards are operations in every leaf's loop, and XLA:CPU's compile time grows faster than
linearly in a program's operation count (its fusion pass builds a reachability map over all
instructions), so they are kept few: one ``is_finite(g)`` per leaf serves all of them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Hyperparams(NamedTuple):
    """Per-step scalar hyperparameters, already resolved against the step count."""

    learning_rate: jax.Array
    rho: jax.Array
    momentum: jax.Array
    epsilon: jax.Array
    decay: jax.Array
    weight_decay: jax.Array
    step: jax.Array  # updates applied so far (t), for the inverse-time ``decay``


class Rule(NamedTuple):
    """Which framework's arithmetic runs: chosen by a preset, never by the user directly.

    Hashable (a static argument of the compiled update). Each field is one way in which the
    frameworks' RMSprop differ; ``None`` means "decided by the momentum slot", as TF 2.x Keras
    decides it.

    Attributes:
      framework: the name used in error messages (``"rmsprop"``, ``"compat.torch"``, ...).
      arg_names: pairs ``(core name, the framework's name)`` for error messages
        (``("rho", "alpha")`` for PyTorch).
      eps_in_sqrt: ε inside the root (``sqrt(v + ε)``) or outside (``sqrt(v) + ε``).
      fused_order: the float order of TF's fused ``ApplyRMSProp`` kernels
        (``rms + (|g|² − rms)·(1−ρ)``) instead of op by op (``ρ·rms + (1−ρ)·|g|²``).
      momentum_slot: ``True`` always keeps a momentum buffer (TF1); ``None``: unless momentum
        is concretely 0 (TF 2.x Keras, Keras 3, PyTorch).
      lr_in_momentum: lr inside the momentum buffer (TF, Keras, optax) or outside (PyTorch).
      weight_decay: ``"none"``, ``"coupled"`` (``g ← g + wd·p``, PyTorch) or ``"decoupled"``
        (``p ← p − p·wd·lr`` before the step, Keras 3).
      maximize: ascend (PyTorch ``maximize``).
      one_minus_rho_in_double: ``1 − ρ`` computed from the Python number in double precision and
        then rounded (Keras 3, PyTorch), instead of in the compute dtype (TF: ``1 − 0.9f``).
      float32_hyperparameters: names whose value TF first stores as a float32 tensor, so that a
        float64 variable sees the float32-rounded value (TF 2.x Keras: learning_rate, rho,
        momentum; TF1: all four).
      initial_rms: the starting value of the ``rms`` slot (TF1: 1.0).
      complex_as_real: a complex parameter is two real ones (PyTorch's ``view_as_real``: one
        running average per component) instead of one complex value with ``|g|²``.
      scaled_gradient_squared: the ``rms`` increment is ``((1−ρ)·g)·g`` (PyTorch's
        ``addcmul_(g, g, value=1−α)``; no overflow before ``|g|`` reaches ``sqrt(max/(1−ρ))``)
        instead of ``(1−ρ)·(g·g)``.
    """

    framework: str = "rmsprop"
    arg_names: tuple[tuple[str, str], ...] = ()
    eps_in_sqrt: bool | None = None
    fused_order: bool | None = None
    momentum_slot: bool | None = None
    lr_in_momentum: bool = True
    weight_decay: str = "none"
    maximize: bool = False
    one_minus_rho_in_double: bool = False
    float32_hyperparameters: frozenset[str] = frozenset()
    initial_rms: float = 0.0
    complex_as_real: bool = False
    scaled_gradient_squared: bool = False

    def user_name(self, name: str) -> str:
        """The argument's name as the framework (and so the user) writes it."""
        return dict(self.arg_names).get(name, name)

    def variant(self, has_momentum_slot: bool, epsilon_nonzero: bool = False) -> Variant:
        """The formula that runs for a state with (or without) a momentum slot.

        ``epsilon_nonzero``: ε is a constant known (while tracing) not to round to 0 in float32,
        so that ``sqrt(v) + ε`` can never be simplified into a bare square root.
        """
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
    epsilon_nonzero: bool = False  # ε is a constant that is not 0 in float32 (see Rule.variant)
    scaled_gradient_squared: bool = False  # rms gains ((1−ρ)·g)·g (see Rule)


def compute_dtype(*dtypes: Any) -> jnp.dtype:
    """The dtype an update is computed in: the promoted dtype of its inputs, at least float32.

    ``compute_dtype(grad, slot[, param])``: bfloat16/float16 are lifted to float32 (ε would
    underflow), a float64 slot or parameter keeps a float32 gradient at float64, and complex
    inputs stay complex.
    """
    width, is_complex = 4, False  # bytes of the real part
    for d in dtypes:
        if d is None:
            continue
        d = jnp.dtype(d)
        is_complex = is_complex or jnp.issubdtype(d, jnp.complexfloating)
        width = max(width, real_dtype(d).itemsize if jnp.issubdtype(d, jnp.inexact) else 4)
    real = jnp.dtype(jnp.float64 if width >= 8 else jnp.float32)
    return jnp.dtype(jnp.complex128 if width >= 8 else jnp.complex64) if is_complex else real


def real_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The real dtype matching ``dtype`` (``complex64`` -> ``float32``)."""
    return jnp.finfo(dtype).dtype


def exact_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)``, kept as a square root when it is used as a divisor.

    XLA's algebraic simplifier rewrites ``a / sqrt(b)`` into ``a * rsqrt(b)``, which is not
    correctly rounded. TF, Keras and PyTorch divide by the rounded square root, so we insert a
    ``reduce_precision`` to the value's own format: numerically the identity, but it hides the
    ``sqrt`` from the pattern match. It fuses into the same loop (no extra memory traffic).
    """
    root = jnp.sqrt(x)
    info = jnp.finfo(root.dtype)
    return lax.reduce_precision(root, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def rounded(x: jax.Array, finite: jax.Array | None = None) -> jax.Array:
    """``x`` itself, rounded to its dtype before it is used in a sum.

    XLA's CPU and GPU back ends let LLVM contract ``a*b + c`` into one fused multiply-add, which
    rounds once instead of twice and so differs from TF/Keras (separate kernels) in about a
    quarter of float32 elements. Passing the product through a select keeps it a value of its
    own. The select must not be provably trivial, or LLVM folds it away: ``is_finite(x)``
    cannot be decided for a product that may overflow, and the other branch, ``x + x``, equals
    ``x`` for the only inputs that take it (±inf, NaN). Three HLO operations (``is-finite``,
    ``add``, ``select``; ``|x| < inf`` spelled out took five, which XLA compiles measurably
    slower on thousands of leaves), one compare and select in the same fused loop.
    Not cheaper variants: ``x < inf`` is folded where LLVM can prove ``x`` is not NaN (Keras's
    ``decay·t``); ``max(x, −inf)`` with the constant behind an optimization barrier too
    (XLA:CPU removes the barrier before LLVM sees the loop); a ``reduce_precision`` to the
    value's own format emits no instruction on CPU, so the product is contracted again.

    ``finite``: a condition computed once and shared by several guards (two operations each
    instead of three), False only where ``x`` is not finite or where the sum that ``x`` enters
    is NaN whatever ``x`` is -- ``is_finite(g)`` for the products that a non-finite gradient
    makes infinite or NaN (see :func:`rmsprop_step`). It must not be provably true either, and
    a gradient never is.
    """
    if jnp.iscomplexobj(x):
        return lax.complex(rounded(jnp.real(x)), rounded(jnp.imag(x)))
    return lax.select(lax.is_finite(x) if finite is None else finite, x, lax.add(x, x))


def rounded_where_it_counts(
    x: jax.Array, finite: jax.Array | None, elsewhere: jax.Array
) -> jax.Array:
    """``x`` rounded on its own (as :func:`rounded`) where ``finite`` holds, in one operation,
    for a product whose value does not matter where ``finite`` is False.

    ``select(finite, x, elsewhere)``: where ``finite`` holds the product reaches its sum through
    a select, which LLVM cannot contract into a fused multiply-add; elsewhere it is replaced by
    ``elsewhere``, an array of its shape and dtype that the loop has anyway -- best an input
    (a slot, the parameter): an expensive value such as the step's division, given a second
    user here, is written by XLA:CPU to a leaf-sized temporary (``tests/test_rmsprop.py``
    checks that the donated step has none). Only for a product
    whose result is NaN wherever ``finite`` (``is_finite(g)``) is False, whatever the product
    is: a step of :func:`step_from_moments` is NaN there (±inf/inf, 0·inf or NaN), and so is
    every sum and difference it enters. ``finite=None`` (complex) takes :func:`rounded`.
    """
    if finite is None or jnp.iscomplexobj(x):
        return rounded(x, finite)
    return lax.select(finite, x, elsewhere)


def sum_of_products(a: jax.Array, b: jax.Array, finite: jax.Array | None) -> jax.Array:
    """``a + b`` for two products, each rounded on its own, in four operations instead of seven.

    ``finite`` must be False only where ``a + b`` cannot be finite, e.g. ``is_finite(g)`` for
    ``ρ·rms + (1−ρ)·g²`` with ρ in [0, 1], computed once per leaf and shared by its sums.

    ``select(finite, a, s) + select(finite, b, s)`` with ``s = a + b``: where ``finite`` holds,
    both products reach the add through a select, which LLVM cannot contract into a fused
    multiply-add, so the sum is the twice-rounded ``a + b`` that TF computes. Elsewhere the
    result is ``s + s = s``, and ``s`` -- contracted or not -- is the same infinity or NaN as
    ``a + b``: one operand is ±inf or NaN, and with ``|ρ| ≤ 1`` the exact and the rounded other
    product are infinite (or NaN) together. Two :func:`rounded` and the add take seven
    operations; a step over thousands of leaves compiles in a time that grows faster than
    linearly in its operation count. Complex operands, or ``finite=None``, take :func:`rounded`.
    """
    if finite is None or jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return rounded(a) + rounded(b)
    s = a + b
    return lax.add(lax.select(finite, a, s), lax.select(finite, b, s))


def step_as_float(count: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """The step count as a float ``t`` (exact), not provably finite to LLVM (see ``rounded``).

    Provably finite operands let LLVM rewrite ``lr / (1 + decay·t)`` with a constant ``lr`` and
    ``decay`` (a user's ``jit``) into a form that rounds differently from TF; a negative count
    (never produced by the update) selects ``inf`` here and is mapped to ``t = 0`` by
    :func:`resolve`, so it cannot produce NaN.
    """
    return jnp.where(count >= 0, count.astype(dtype), jnp.asarray(jnp.inf, dtype))


def abs_sq(x: jax.Array, finite: jax.Array | None = None) -> jax.Array:
    """``|x|²`` as a real array (``x*x`` for real ``x``, ``re² + im²`` for complex), rounded
    (``finite``: see :func:`rounded`)."""
    if jnp.iscomplexobj(x):
        return rounded(jnp.real(x) ** 2) + rounded(jnp.imag(x) ** 2)
    return rounded(x * x, finite)


def _factor_sq(x: jax.Array) -> jax.Array:
    """``|x|²`` as a factor of a product: a real square then needs no rounding of its own."""
    return abs_sq(x) if jnp.iscomplexobj(x) else x * x


def _mean_squared(mg: jax.Array, finite: jax.Array | None, rms: jax.Array) -> jax.Array:
    """``|mg|²`` for the variance ``rms − |mg|²`` of the centered step, rounded on its own.

    Where ``finite`` (``is_finite(g)``) is False the new ``rms`` is +inf or NaN and the new
    ``mg`` ±inf or NaN, so the variance is NaN whatever ``|mg|²`` is (inf − inf), and so is
    the step: one select (:func:`rounded_where_it_counts`) instead of two operations.
    """
    if finite is None or jnp.iscomplexobj(mg):
        return abs_sq(mg, finite)
    return rounded_where_it_counts(mg * mg, finite, rms.astype(mg.dtype))


class Scalars(NamedTuple):
    """The per-step scalars in one real dtype: resolved once, shared by every leaf of that dtype."""

    lr: jax.Array  # learning_rate / (1 + decay·t)
    rho: jax.Array
    one_minus_rho: jax.Array
    momentum: jax.Array
    epsilon: jax.Array
    weight_decay: jax.Array
    minus_lr: jax.Array  # −lr: negated once per step, not in every leaf (step_from_moments)


def resolve(
    hp: Hyperparams, one_minus_rho: jax.Array | None, dtype: jnp.dtype, rule: Rule
) -> Scalars:
    """Casts the hyperparameters to the real dtype ``dtype`` and applies Keras's ``decay``.

    The names in ``rule.float32_hyperparameters`` pass through float32 first, as TF stores them
    (a float64 variable then sees ``float64(float32(0.1))``, not ``0.1``). ``one_minus_rho``,
    when given, is ``1 − ρ`` already computed in double precision (Keras 3, PyTorch).
    """
    rdtype = real_dtype(dtype)

    def cast(name: str, h: jax.Array) -> jax.Array:
        h = jnp.asarray(h)
        if name in rule.float32_hyperparameters:
            h = h.astype(jnp.float32)
        return h.astype(rdtype)

    names = Hyperparams._fields[:6]
    lr, rho, mu, eps, decay, wd = (cast(n, h) for n, h in zip(names, hp[:6], strict=True))
    one = jnp.asarray(1, rdtype)
    if isinstance(hp.decay, (int, float)) and hp.decay == 0:
        # A literal 0 (the default): lr / (1 + 0·t) is lr exactly. Left out of the program, the
        # rate stays a constant that XLA folds into each leaf's loop (faster to compile).
        lr_t = lr
    else:
        t = step_as_float(jnp.asarray(hp.step), rdtype)
        lr_t = lr / (one + jnp.where(hp.step >= 0, rounded(decay * t), 0))
    return Scalars(
        lr=lr_t,
        rho=rho,
        one_minus_rho=one - rho if one_minus_rho is None else cast("", one_minus_rho),
        momentum=mu,
        epsilon=eps,
        weight_decay=wd,
        minus_lr=-lr_t,
    )


def effective_gradient(
    grad: jax.Array, param: jax.Array | None, sc: Scalars, variant: Variant, dtype: Any
) -> jax.Array:
    """``g`` in the compute dtype, negated for ``maximize``, plus ``wd·p`` for coupled decay."""
    g = grad.astype(dtype)
    if variant.maximize:
        g = -g
    if param is not None and not variant.decoupled_weight_decay:
        g = g + rounded(sc.weight_decay.astype(g.dtype) * param.astype(g.dtype))
    return g


def decayed(x: jax.Array, rho: jax.Array, dtype: Any, guard: bool = True) -> jax.Array:
    """``ρ·x`` in the compute dtype ``dtype``: the decay of a moving average.

    The dense step and the sparse rows (where every row of ``rms`` decays) share it, so both
    round the same way whatever the slot dtype. ``guard=False`` leaves out :func:`rounded`, for
    a caller that adds the product with :func:`sum_of_products`.
    """
    product = rho.astype(dtype) * x.astype(dtype)
    return rounded(product) if guard else product


def moment_increments(
    g: jax.Array, sc: Scalars, centered: bool, guard: bool = True, scaled: bool = False
) -> tuple[jax.Array, jax.Array | None]:
    """``((1−ρ)·|g|², (1−ρ)·g)``: what the moving averages gain from ``g`` (op-by-op order);
    the second is None when not ``centered``. ``guard``: as for :func:`decayed`. ``scaled``:
    the first is ``((1−ρ)·g)·g`` (real ``g``, PyTorch's order)."""
    if scaled:
        rms_inc = (sc.one_minus_rho.astype(g.dtype) * g) * g
    else:
        rms_inc = sc.one_minus_rho * _factor_sq(g)
    mg_inc = sc.one_minus_rho.astype(g.dtype) * g if centered else None
    if not guard:
        return rms_inc, mg_inc
    return rounded(rms_inc), None if mg_inc is None else rounded(mg_inc)


def update_moments(
    g: jax.Array,
    rms: jax.Array,
    mg: jax.Array | None,
    sc: Scalars,
    variant: Variant,
    finite: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """The new ``rms`` (and ``mg``), in the compute dtypes::

    rms = ρ·rms + (1−ρ)·|g|²       fused order: rms + (|g|² − rms)·(1−ρ)
    mg  = ρ·mg + (1−ρ)·g           fused order: mg + (g − mg)·(1−ρ)      (centered only)

    ``finite``: ``is_finite(g)``, shared by the guards (see :func:`rmsprop_step`), or None.
    """
    rdtype = sc.rho.dtype
    if variant.fused_order:  # TF's fused ApplyRMSProp kernels
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
    rms_new = sum_of_products(decayed(rms, sc.rho, rdtype, guard=False), rms_inc, finite)
    if mg is None or mg_inc is None:
        return rms_new, None
    return rms_new, sum_of_products(decayed(mg, sc.rho, g.dtype, guard=False), mg_inc, finite)


def step_from_moments(
    g: jax.Array,
    param: jax.Array | None,
    rms: jax.Array,
    mg: jax.Array | None,
    mom: jax.Array | None,
    sc: Scalars,
    variant: Variant,
    negate: bool = False,
    finite: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """The parameter step from the *updated* moments (compute dtypes)::

    v     = rms − |mg|²   (centered)   or   rms
    denom = sqrt(v + ε)   (ε inside)   or   sqrt(v) + ε
    step  = lr·g / denom  (lr inside the buffer, or no buffer)   or   g / denom
    mom   = μ·mom + step  (momentum slot)  ;  delta = mom   or   step
    delta = lr·mom        (lr outside the buffer, PyTorch)
    p − delta is then rounded after p − (p·wd)·lr  (decoupled weight decay)

    Returns ``(delta, mom)``: the amount to *subtract* from the parameter and the new buffer;
    with ``negate``, ``−delta`` (the update to *add*) instead.

    The division by a square root is kept a division (:func:`exact_sqrt`), except for
    ``sqrt(v) + ε`` with an ε known not to be 0 (``variant.epsilon_nonzero``): XLA rewrites only
    a bare square root into ``rsqrt``, and a non-zero ε cannot be folded away. ``negate`` puts
    the sign on the scalar ``lr`` where ``lr`` is a factor of the result (no momentum buffer, no
    decoupled decay): ``(−lr)·g / denom`` is ``−(lr·g / denom)`` bit for bit and costs no
    operation per element; elsewhere the result is negated. (Only a NaN's sign bit may differ.)
    """
    cdtype = g.dtype
    lr, eps, mu = sc.lr, sc.epsilon, sc.momentum
    sign_on_lr = negate and mom is None and not variant.decoupled_weight_decay
    if sign_on_lr:
        lr = sc.minus_lr
    if variant.sparse_fused_order:
        # SparseApply(Centered)RMSProp: denom = (ms + ε) − mg², mom = mom·μ + (rsqrt(denom)·lr)·g
        inner = rms + eps if mg is None else (rms + eps) - _mean_squared(mg, finite, rms)
        inv_root = jnp.asarray(1, inner.dtype) / exact_sqrt(inner)
        step = rounded(rounded(inv_root.astype(cdtype) * lr.astype(cdtype)) * g)
    else:
        variance = rms if mg is None else rms - _mean_squared(mg, finite, rms)
        if variant.eps_in_sqrt:
            denom = exact_sqrt(variance + eps)
        elif variant.epsilon_nonzero:
            denom = jnp.sqrt(variance) + eps
        else:
            denom = exact_sqrt(variance) + eps
        # lr is a factor of the numerator where it is inside the buffer or there is no buffer
        # (PyTorch's p.addcdiv_(g, avg, value=−lr) computes (−lr·g)/avg too).
        lr_in_numerator = variant.lr_in_momentum or mom is None
        numerator = lr.astype(cdtype) * g if lr_in_numerator else g
        step = numerator / denom.astype(cdtype)
    if mom is not None:
        # A non-finite g makes the step NaN, and so the sum, whatever the guard passes on. The
        # guard's other branch is the slot itself, an input of the loop: with ``step`` there,
        # ``step`` had two users and XLA:CPU wrote it to a buffer of its own (12 more bytes per
        # parameter and a temporary the size of the leaf).
        mom_in = mom.astype(cdtype)
        mom_new = rounded_where_it_counts(mu.astype(cdtype) * mom_in, finite, mom_in) + step
        delta = mom_new
    else:
        mom_new = None
        delta = step
    if not variant.lr_in_momentum and mom is not None:
        # PyTorch's p.add_(buf, alpha=−lr). Rounded on its own: a caller's p + update in the
        # same jit would otherwise be contracted into a fused multiply-add, and the result
        # would depend on the calling style. (PyTorch's own vectorised add is a fused
        # multiply-add, which XLA offers no way to request: float32 rounding, not bit for bit.)
        delta = rounded_where_it_counts(lr.astype(cdtype) * delta, finite, delta)
    if param is not None and variant.decoupled_weight_decay:
        # Keras 3: p ← p − (p·wd)·lr, then p ← p − step, each rounded. The caller adds
        # −delta to p; p − p_new is exact (Sterbenz) whenever p_new is within 2× of p.
        p = param.astype(cdtype)
        # (p·wd)·lr, with p·wd rounded on its own: XLA rewrites (p·c1)·c2 into p·(c1·c2) when
        # wd and lr are constants of the caller's jit, which rounds differently.
        # Both products rounded on their own; where g is not finite, delta is NaN and so is
        # the result, whatever they are.
        p_wd = rounded_where_it_counts(p * sc.weight_decay.astype(cdtype), finite, p)
        decayed_p = p - rounded_where_it_counts(p_wd * lr.astype(cdtype), finite, p)
        delta = p - (decayed_p - delta)
    if negate and not sign_on_lr:
        delta = -delta
    return delta, mom_new


def rmsprop_step(
    grad: jax.Array,
    param: jax.Array | None,
    rms: jax.Array,
    mom: jax.Array | None,
    mg: jax.Array | None,
    sc: Scalars,
    variant: Variant,
    dtype: Any,
    negate: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """One RMSprop step on matching arrays (whole leaves or gathered rows).

    ``g`` is the :func:`effective_gradient`; the moments follow :func:`update_moments` and the
    step :func:`step_from_moments`, with ``lr = learning_rate / (1 + decay·t)``.

    Args:
      grad: the gradient, any float or complex dtype.
      param: the parameter (only read for weight decay; may be None when ``wd`` is unused).
      rms: the running mean of squared gradients (real dtype).
      mom: the momentum buffer, or None when there is no momentum slot.
      mg: the running mean of gradients, or None when not centered.
      sc: the step's scalars (:func:`resolve`) in the real part of ``dtype``.
      variant: where ε, lr and weight decay enter, and the evaluation order.
      dtype: the compute dtype (:func:`compute_dtype`).
      negate: return the update to *add* (``−delta``) instead, at no cost where the sign can
        go on ``lr`` (see :func:`step_from_moments`).

    Returns:
      ``(delta, rms, mom, mg)``: the amount to *subtract* from the parameter (``−delta`` with
      ``negate``), in the compute dtype, and the new slots, each in its input dtype.
    """
    g = effective_gradient(grad, param, sc, variant, dtype)
    # One condition for the guards of every product that a non-finite g makes infinite or NaN
    # (two operations each instead of three, see `rounded`): |g|², the increments and |mg|² of
    # the new mg (with ρ in [0, 1]); and μ·mom, whose sum with the step is then NaN anyway
    # (the step is ±inf/inf or NaN).
    finite = None if jnp.iscomplexobj(g) else lax.is_finite(g)
    rms_new, mg_new = update_moments(g, rms, mg, sc, variant, finite)
    delta, mom_new = step_from_moments(g, param, rms_new, mg_new, mom, sc, variant, negate, finite)
    return (
        delta,
        rms_new.astype(rms.dtype),
        None if mom_new is None or mom is None else mom_new.astype(mom.dtype),
        None if mg_new is None or mg is None else mg_new.astype(mg.dtype),
    )
