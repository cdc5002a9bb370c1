// One-pass float32 RMSprop step for XLA:CPU, called through jax.ffi (see cpu_kernel.py).
//
// XLA:CPU emits one loop per output of a fusion, so its dense RMSprop step re-reads the gradient
// and the slots once per output. This kernel reads every input once and writes every output once.
//
// Exactness: the arithmetic is that of jrmsprop/_src/arithmetic.py, in the same order and with
// the same roundings, so the results equal the XLA path bit for bit:
//   * every operation is one IEEE-754 float32 operation, rounded to nearest: the file must be
//     compiled with -ffp-contract=off (no a*b+c fused into an FMA) and without -ffast-math
//     (no reassociation, no reciprocal approximations; sqrt is the correctly rounded sqrtss);
//   * a / sqrt(b) stays a division by the rounded root;
//   * denormals: XLA:CPU runs its code with flush-to-zero and denormals-are-zero set. The
//     calling thread already has XLA's mode; the worker threads copy the caller's control
//     register, so every chunk is computed in the caller's mode.
//
// One call updates any number of leaves (`leaves`, each of its own size). Operands: scalars =
// float32[5] {lr, rho, 1-rho, momentum, epsilon}, then for each leaf grad, rms, mom when
// `momentum`, mg when `centered`, param when `output == 2`. Results, for each leaf: out, rms, then
// mom, mg.
// `out` is delta (output 0), -delta (output 1, the optax update) or param - delta (output 2);
// outputs 3 and 4 are delta and -delta written over the gradient's buffer.
// The slot results alias the slot operands, `out` aliases `param` for output 2 and `grad` for 3
// and 4 (input_output_aliases): element i is read before it is written, so all is in place.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// ---------------------------------------------------------------------------------------------
// Floating-point control (flush-to-zero / denormals-are-zero / rounding) of the calling thread.
// ---------------------------------------------------------------------------------------------

#if defined(__x86_64__) || defined(__i386__)
using FpControl = unsigned int;
inline FpControl GetFpControl() { return _mm_getcsr(); }
inline void SetFpControl(FpControl c) { _mm_setcsr(c); }
#elif defined(__aarch64__)
using FpControl = uint64_t;
inline FpControl GetFpControl() {
  uint64_t c;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(c));
  return c;
}
inline void SetFpControl(FpControl c) { __asm__ __volatile__("msr fpcr, %0" : : "r"(c)); }
#else
using FpControl = int;
inline FpControl GetFpControl() { return 0; }
inline void SetFpControl(FpControl) {}
#endif

// Runs with the given control register, restoring the thread's own afterwards.
class ScopedFpControl {
 public:
  explicit ScopedFpControl(FpControl c) : saved_(GetFpControl()) {
    if (c != saved_) SetFpControl(c);
  }
  ~ScopedFpControl() {
    if (GetFpControl() != saved_) SetFpControl(saved_);
  }

 private:
  FpControl saved_;
};

// ---------------------------------------------------------------------------------------------
// The arithmetic (one element at a time; the loop is vectorised by the compiler).
// ---------------------------------------------------------------------------------------------

struct Scalars {
  float lr, rho, one_minus_rho, momentum, epsilon;
};

// The slot results alias the slot operands (XLA guarantees it for input_output_aliases, copying
// first when an operand cannot be overwritten), so each slot is one read-write pointer; `out`
// aliases `param` when the output is param - delta. Distinct arrays never overlap.
struct Pointers {
  const float* grad;
  float* rms;
  float* mom;
  float* mg;
  float* out;
};

// kOutput: 0 delta, 1 -delta, 2 param - delta (out holds param on entry), 3 delta and 4 -delta
// written over the gradient (out holds grad on entry; `grad` is not read).
template <bool kMomentum, bool kCentered, bool kEpsInSqrt, bool kTfKernel, int kOutput>
void StepRange(const Pointers& p, const Scalars& s, int64_t begin, int64_t end) {
  const float lr = s.lr, rho = s.rho, omr = s.one_minus_rho, mu = s.momentum, eps = s.epsilon;
  const float* __restrict__ grad = p.grad;
  float* __restrict__ rms = p.rms;
  float* __restrict__ mom = p.mom;
  float* __restrict__ mg = p.mg;
  float* __restrict__ out = p.out;
  for (int64_t i = begin; i < end; ++i) {
    const float g = (kOutput >= 3) ? out[i] : grad[i];
    const float r = rms[i];
    const float g2 = g * g;
    // update_moments
    float r_new;
    if (kTfKernel) {
      r_new = r + (g2 - r) * omr;  // TF ApplyRMSProp: ms + (g² − ms)·(1−ρ)
    } else {
      r_new = rho * r + omr * g2;  // op by op: ρ·ms + (1−ρ)·g²
    }
    float variance = r_new;
    if (kCentered) {
      const float m = mg[i];
      float mg_new;
      if (kTfKernel) {
        mg_new = m + (g - m) * omr;
      } else {
        mg_new = rho * m + omr * g;
      }
      mg[i] = mg_new;
      variance = r_new - mg_new * mg_new;
    }
    rms[i] = r_new;
    // step_from_moments (lr inside the momentum buffer)
    float denom;
    if (kEpsInSqrt) {
      denom = std::sqrt(variance + eps);
    } else {
      denom = std::sqrt(variance) + eps;
    }
    const float step = (lr * g) / denom;
    float delta = step;
    if (kMomentum) {
      delta = mu * mom[i] + step;
      mom[i] = delta;
    }
    if (kOutput == 0 || kOutput == 3) {
      out[i] = delta;
    } else if (kOutput == 1 || kOutput == 4) {
      out[i] = -delta;
    } else {
      out[i] = out[i] - delta;
    }
  }
}

using RangeFn = void (*)(const Pointers&, const Scalars&, int64_t, int64_t);

template <bool M, bool C, bool E, bool T>
RangeFn SelectOutput(int output) {
  switch (output) {
    case 0: return &StepRange<M, C, E, T, 0>;
    case 1: return &StepRange<M, C, E, T, 1>;
    case 2: return &StepRange<M, C, E, T, 2>;
    case 3: return &StepRange<M, C, E, T, 3>;
    default: return &StepRange<M, C, E, T, 4>;
  }
}

template <bool M, bool C, bool E>
RangeFn SelectTf(bool tf, int output) {
  return tf ? SelectOutput<M, C, E, true>(output) : SelectOutput<M, C, E, false>(output);
}

template <bool M, bool C>
RangeFn SelectEps(bool eps_in_sqrt, bool tf, int output) {
  return eps_in_sqrt ? SelectTf<M, C, true>(tf, output) : SelectTf<M, C, false>(tf, output);
}

RangeFn Select(bool momentum, bool centered, bool eps_in_sqrt, bool tf, int output) {
  if (momentum) {
    return centered ? SelectEps<true, true>(eps_in_sqrt, tf, output)
                    : SelectEps<true, false>(eps_in_sqrt, tf, output);
  }
  return centered ? SelectEps<false, true>(eps_in_sqrt, tf, output)
                  : SelectEps<false, false>(eps_in_sqrt, tf, output);
}

// ---------------------------------------------------------------------------------------------
// Parallel loop over segments. The leaves are cut into segments of at most kChunk elements (a
// smaller leaf is one segment), and segments are claimed from an atomic counter by the caller and
// by tasks scheduled on XLA's intra-op thread pool; the caller then waits only for segments
// already claimed. A task that starts late (or never, on a busy pool) claims nothing, so this
// cannot deadlock, and the shared state is reference counted so a late task never touches freed
// memory. One call over every leaf of a step (instead of one call per leaf) keeps both cores
// busy on a model of many small leaves and pays the pool's wake-up once.
// ---------------------------------------------------------------------------------------------

constexpr int64_t kChunk = 1 << 16;          // elements per segment (256 KiB per array)
constexpr int64_t kParallelMin = 1 << 18;    // below this in all, one thread (spawn cost dominates)

struct Segment {
  Pointers ptrs;
  int64_t begin, end;
};

struct Work {
  RangeFn fn;
  Scalars scalars;
  std::vector<Segment> segments;
  int64_t count = 0;
  FpControl fp_control;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;

  void Run() {
    int64_t finished = 0;
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= count) break;
      const Segment& seg = segments[c];
      fn(seg.ptrs, scalars, seg.begin, seg.end);
      ++finished;
    }
    if (finished == 0) return;
    if (done.fetch_add(finished, std::memory_order_acq_rel) + finished == count) {
      std::lock_guard<std::mutex> lock(mu);
      cv.notify_all();
    }
  }
};

// Operands: scalars, then for each of `leaves` leaves grad, rms, [mom], [mg], [param when
// output == 2]. Results, for each leaf: out, rms, [mom], [mg]. Leaves may differ in size.
ffi::Error RmspropImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                       ffi::RemainingArgs args, ffi::RemainingRets rets, int32_t leaves,
                       int32_t momentum, int32_t centered, int32_t eps_in_sqrt, int32_t tf_kernel,
                       int32_t output, int32_t max_threads) {
  if (scalars.element_count() != 5) {
    return ffi::Error::InvalidArgument("jrmsprop_rmsprop_f32: scalars must have 5 elements");
  }
  if (output < 0 || output > 4) {
    return ffi::Error::InvalidArgument("jrmsprop_rmsprop_f32: output must be 0 to 4");
  }
  if (leaves < 0) {
    return ffi::Error::InvalidArgument("jrmsprop_rmsprop_f32: leaves must be >= 0");
  }
  const size_t per_in = 2 + (momentum ? 1 : 0) + (centered ? 1 : 0) + (output == 2 ? 1 : 0);
  const size_t per_out = 2 + (momentum ? 1 : 0) + (centered ? 1 : 0);
  if (args.size() != per_in * leaves || rets.size() != per_out * leaves) {
    return ffi::Error::InvalidArgument(
        "jrmsprop_rmsprop_f32: operand count does not match the leaves/momentum/centered/output "
        "attributes");
  }
  auto work = std::make_shared<Work>();
  work->fn = Select(momentum != 0, centered != 0, eps_in_sqrt != 0, tf_kernel != 0, output);
  const float* sc = scalars.typed_data();
  work->scalars = Scalars{sc[0], sc[1], sc[2], sc[3], sc[4]};
  int64_t total = 0;
  size_t in_i = 0, out_i = 0;
  for (int32_t leaf = 0; leaf < leaves; ++leaf) {
    auto grad = args.get<ffi::Buffer<ffi::F32>>(in_i++);
    if (grad.has_error()) return grad.error();
    const int64_t n = static_cast<int64_t>(grad->element_count());
    // Each slot result should be its operand's buffer (input_output_aliases); if XLA ever hands
    // over a distinct buffer, the operand is copied there first and updated in place.
    auto in_place = [n](const float* in, float* res) {
      if (in != res) std::copy(in, in + n, res);
      return res;
    };
    auto next_in = [&](const float** dst) -> ffi::Error {
      auto b = args.get<ffi::Buffer<ffi::F32>>(in_i++);
      if (b.has_error()) return b.error();
      if (static_cast<int64_t>(b->element_count()) != n) {
        return ffi::Error::InvalidArgument("jrmsprop_rmsprop_f32: operand sizes differ");
      }
      *dst = b->typed_data();
      return ffi::Error::Success();
    };
    auto next_out = [&](float** dst) -> ffi::Error {
      auto b = rets.get<ffi::Buffer<ffi::F32>>(out_i++);
      if (b.has_error()) return b.error();
      if (static_cast<int64_t>((*b)->element_count()) != n) {
        return ffi::Error::InvalidArgument("jrmsprop_rmsprop_f32: result sizes differ");
      }
      *dst = (*b)->typed_data();
      return ffi::Error::Success();
    };
    Pointers p{};
    p.grad = grad->typed_data();
    const float* in = nullptr;
    if (auto e = next_in(&in); e.failure()) return e;  // rms
    if (auto e = next_out(&p.out); e.failure()) return e;
    if (auto e = next_out(&p.rms); e.failure()) return e;
    in_place(in, p.rms);
    if (momentum) {
      if (auto e = next_in(&in); e.failure()) return e;
      if (auto e = next_out(&p.mom); e.failure()) return e;
      in_place(in, p.mom);
    }
    if (centered) {
      if (auto e = next_in(&in); e.failure()) return e;
      if (auto e = next_out(&p.mg); e.failure()) return e;
      in_place(in, p.mg);
    }
    if (output == 2) {
      if (auto e = next_in(&in); e.failure()) return e;
      in_place(in, p.out);
    }
    if (output >= 3) in_place(p.grad, p.out);  // the result takes the gradient's buffer
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      work->segments.push_back(Segment{p, begin, std::min(n, begin + kChunk)});
    }
    total += n;
  }
  work->count = static_cast<int64_t>(work->segments.size());

  int64_t threads = pool.num_threads();
  if (max_threads > 0) threads = std::min<int64_t>(threads, max_threads);
  if (total < kParallelMin || threads <= 1 || work->count <= 1) {
    for (const Segment& seg : work->segments) work->fn(seg.ptrs, work->scalars, seg.begin, seg.end);
    return ffi::Error::Success();
  }
  work->fp_control = GetFpControl();
  const int64_t helpers = std::min(threads, work->count) - 1;
  for (int64_t k = 0; k < helpers; ++k) {
    pool.Schedule([work] {
      ScopedFpControl fp(work->fp_control);
      work->Run();
    });
  }
  work->Run();
  std::unique_lock<std::mutex> lock(work->mu);
  work->cv.wait(lock, [&] { return work->done.load(std::memory_order_acquire) == work->count; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrmspropRmspropF32, RmspropImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scalars
                                  .RemainingArgs()               // per leaf: grad, rms, ...
                                  .RemainingRets()               // per leaf: out, rms, ...
                                  .Attr<int32_t>("leaves")
                                  .Attr<int32_t>("momentum")
                                  .Attr<int32_t>("centered")
                                  .Attr<int32_t>("eps_in_sqrt")
                                  .Attr<int32_t>("tf_kernel")
                                  .Attr<int32_t>("output")
                                  .Attr<int32_t>("max_threads"));
