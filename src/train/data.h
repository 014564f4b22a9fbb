// Byte-level training data for `strata train`: a text file's bytes are the tokens (vocabulary
// 256, no tokenizer, no download). The last `val_fraction` of the file is the validation split.
// Training batches take B windows of T + 1 bytes at positions drawn from (seed, step), so a run
// is reproducible and a resumed run sees the batches it would have seen; validation batches are
// fixed, evenly spaced windows of the held-out part.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/common/status.h"

namespace strata::train {

class ByteDataset {
 public:
  // Errors name the file: missing, unreadable, empty, or a split shorter than T + 1 bytes.
  static StatusOr<ByteDataset> open(const std::string& path, double val_fraction, int T, uint64_t seed);

  // inputs, targets: [B, T]; targets are inputs shifted by one byte. Rows first_row ..
  // first_row + B - 1 of the step's global batch (data-parallel rank r takes first_row = r * B).
  void train_batch(int64_t step, int B, int32_t* inputs, int32_t* targets, int first_row = 0) const;
  // Validation batch `index` of `batch_rows` rows (0: B): its rows first_row .. first_row + B - 1.
  void val_batch(int index, int B, int32_t* inputs, int32_t* targets, int first_row = 0, int batch_rows = 0) const;

  size_t train_bytes() const { return split_; }
  size_t val_bytes() const { return bytes_.size() - split_; }
  const std::string& path() const { return path_; }

 private:
  void window(size_t start, int32_t* inputs, int32_t* targets) const;
  std::string path_;
  std::vector<uint8_t> bytes_;
  size_t split_ = 0;  // [0, split_) train, [split_, end) validation
  int T_ = 0;
  uint64_t seed_ = 0;
};

// Writes the default corpus to `path` (about `bytes` long): English-like text from a fixed
// vocabulary and grammar, generated from a fixed seed — the same file on every machine, with
// structure (words, sentences, punctuation) a small model learns within minutes.
Status write_default_corpus(const std::string& path, size_t bytes);

}  // namespace strata::train
