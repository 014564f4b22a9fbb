// PrefetchScheduler: the decisions of trace-driven prefetching, apart from the transfers. It
// records the order in which units (chunks) are fetched during a pass (a micro-batch), and in the
// following passes follows that trace: it says which units come next within a lookahead of
// elements, how far away a unit's next use is (to keep chunks that are reused soon and evict the
// one needed last), and notices when a fetch leaves the trace (a different control path). Then it
// stops predicting for the rest of that pass, and the pass's own order becomes the new trace.
// Pure bookkeeping: no I/O, no threads; the engine acts on its answers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace strata::offload {

class PrefetchScheduler {
 public:
  static constexpr size_t kNever = SIZE_MAX;
  enum class Seen {
    kRecording,     // no trace yet (the first pass) or the order changed earlier in this pass
    kOnTrace,       // the fetch is the one the trace predicted (or the current unit again)
    kOrderChanged,  // the fetch left the trace just now: prefetching is off until the pass ends
  };

  // unit_elems[u]: elements of unit u (its transfer size in elements).
  explicit PrefetchScheduler(std::vector<size_t> unit_elems);

  // A fetch of unit u.
  Seen on_fetch(uint32_t u);
  // Ends the pass: its order becomes the trace followed by the next pass.
  void end_pass();

  // True while following a trace (predictions are valid).
  bool following() const { return !trace_.empty() && !diverged_; }
  // The units the trace fetches next, after the current position, each once, until their
  // elements add up past `lookahead_elems` (the first is always included). Empty unless following.
  std::vector<uint32_t> upcoming(size_t lookahead_elems) const;
  // Elements fetched from now until u is fetched again in this pass; kNever if not again.
  // 0 for the current unit.
  size_t next_use(uint32_t u) const;

  const std::vector<uint32_t>& trace() const { return trace_; }
  size_t position() const { return pos_; }
  int64_t order_changes() const { return order_changes_; }
  // "expected chunk 3 at fetch 7 of the trace, got chunk 5" for the last change.
  const std::string& last_change() const { return last_change_; }

 private:
  std::vector<size_t> elems_;
  std::vector<uint32_t> trace_;    // the followed order (consecutive repeats collapsed)
  std::vector<uint32_t> current_;  // this pass's order so far
  size_t pos_ = 0;                 // trace_[0, pos_) has been fetched in this pass
  bool diverged_ = false;
  int64_t order_changes_ = 0;
  std::string last_change_;
};

}  // namespace strata::offload
