// The emulator's runtime: blocks run one after another; a block's threads are fibers (ucontext) on one OS
// thread, each running until it reaches __syncthreads, a warp synchronisation or its end, then the next
// runnable fiber runs. A barrier opens when every live thread of its scope (block, or warp) waits at it.
// Between synchronisation points the order of threads is shuffled per phase, so a missing barrier shows
// as a wrong or changing result more often than not.
#include "shim.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>

namespace emu {

namespace {
constexpr size_t kStack = 256 * 1024;

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  std::vector<unsigned char> stack;
  State state = State::Runnable;
  uint3 thread;
  int linear = 0;
};
}  // namespace

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = -1;
  std::vector<unsigned char> scratch;
  std::vector<unsigned char> dyn;
  const std::function<void()>* body = nullptr;
  std::mt19937 order{12345};
};

thread_local uint3 tls_thread;
thread_local uint3 tls_block;
thread_local dim3 tls_block_dim;
thread_local dim3 tls_grid_dim;
thread_local Block* tls_blk = nullptr;

namespace {

void yield_as(State s) {
  Block* b = tls_blk;
  Fiber& f = b->fibers[size_t(b->current)];
  f.state = s;
  swapcontext(&f.ctx, &b->scheduler);
  tls_thread = f.thread;  // back on this fiber
}

void fiber_main(int index) {
  Block* b = tls_blk;
  (*b->body)();
  b->fibers[size_t(index)].state = State::Done;
  swapcontext(&b->fibers[size_t(index)].ctx, &b->scheduler);
}

int linear_now() { return tls_blk->fibers[size_t(tls_blk->current)].linear; }

}  // namespace

void syncthreads() { yield_as(State::AtBlockBarrier); }
void syncwarp() { yield_as(State::AtWarpBarrier); }

const void* exchange(const void* mine, size_t bytes) {
  Block* b = tls_blk;
  const int lin = linear_now();
  unsigned char* base = b->scratch.data() + size_t(lin / 32) * 32 * 64;
  std::memcpy(base + size_t(lin % 32) * bytes, mine, bytes);
  syncwarp();
  return base;
}

void* dynamic_smem_raw() { return tls_blk->dyn.data(); }

void run_grid(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem) {
  const int n = int(block.x * block.y * block.z);
  static thread_local Block blk;
  if (blk.fibers.size() != size_t(n)) {
    blk.fibers = std::vector<Fiber>(size_t(n));
    for (auto& f : blk.fibers) f.stack.resize(kStack);
  }
  blk.scratch.assign(size_t((n + 31) / 32) * 32 * 64, 0);
  blk.body = &body;
  Block* saved = tls_blk;
  tls_blk = &blk;
  tls_block_dim = block;
  tls_grid_dim = grid;
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        tls_block = make_uint3(bx, by, bz);
        blk.dyn.assign(smem + 16, 0xFF);
        for (int t = 0; t < n; ++t) {
          Fiber& f = blk.fibers[size_t(t)];
          f.linear = t;
          f.thread = make_uint3(unsigned(t % int(block.x)), unsigned((t / int(block.x)) % int(block.y)),
                                unsigned(t / int(block.x * block.y)));
          f.state = State::Runnable;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack.data();
          f.ctx.uc_stack.ss_size = f.stack.size();
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_main), 1, t);
        }
        for (;;) {
          bool ran = false;
          std::shuffle(order.begin(), order.end(), blk.order);
          for (int t : order) {
            Fiber& f = blk.fibers[size_t(t)];
            if (f.state != State::Runnable) continue;
            blk.current = t;
            tls_thread = f.thread;
            swapcontext(&blk.scheduler, &f.ctx);
            ran = true;
          }
          if (ran) continue;
          // Nothing runnable: open the barriers whose scope has arrived.
          // One warp at a time, chosen at random: warps drift apart as far as the block barriers let them,
          // so a missing __syncthreads lets one warp overwrite what another still reads.
          bool all_done = true;
          std::vector<int> ready;
          for (int w = 0; w * 32 < n; ++w) {
            bool any_warp = false, complete = true;
            for (int t = 32 * w; t < std::min(n, 32 * w + 32); ++t) {
              const State s = blk.fibers[size_t(t)].state;
              if (s == State::AtWarpBarrier) any_warp = true;
              else if (s != State::Done) complete = false;
            }
            if (any_warp && complete) ready.push_back(w);
          }
          if (!ready.empty()) {
            const int w = ready[blk.order() % ready.size()];
            for (int t = 32 * w; t < std::min(n, 32 * w + 32); ++t)
              if (blk.fibers[size_t(t)].state == State::AtWarpBarrier) blk.fibers[size_t(t)].state = State::Runnable;
            continue;
          }
          bool any_block = false, block_complete = true;
          for (const Fiber& f : blk.fibers) {
            if (f.state != State::Done) all_done = false;
            if (f.state == State::AtBlockBarrier) any_block = true;
            else if (f.state != State::Done) block_complete = false;
          }
          if (all_done) break;
          if (any_block && block_complete) {
            for (Fiber& f : blk.fibers)
              if (f.state == State::AtBlockBarrier) f.state = State::Runnable;
            continue;
          }
          std::fprintf(stderr, "emulator: deadlock in block (%u, %u, %u): threads wait at different barriers\n", bx, by, bz);
          std::abort();
        }
      }
  tls_blk = saved;
}

}  // namespace emu
