// ByteDataset and the generated default corpus.
#include "src/train/data.h"

#include <cstring>

#include "src/common/fs.h"

namespace strata::train {
namespace {

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

StatusOr<ByteDataset> ByteDataset::open(const std::string& path, double val_fraction, int T, uint64_t seed) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0))
    return invalid_argument("data: the validation fraction must be in (0, 1), not " + std::to_string(val_fraction));
  if (T < 1) return invalid_argument("data: the sequence length must be >= 1");
  auto text = fs::read_file(path);
  if (!text.is_ok()) return std::move(text).status().annotate("data file");
  if (text.value().empty()) return invalid_argument("data file " + path + " is empty");
  ByteDataset d;
  d.path_ = path;
  d.bytes_.assign(text.value().begin(), text.value().end());
  d.split_ = static_cast<size_t>(static_cast<double>(d.bytes_.size()) * (1.0 - val_fraction));
  d.T_ = T;
  d.seed_ = seed;
  const size_t need = static_cast<size_t>(T) + 1;
  if (d.split_ < need || d.bytes_.size() - d.split_ < need)
    return invalid_argument("data file " + path + " has " + std::to_string(d.bytes_.size()) + " bytes: with " +
                            std::to_string(static_cast<int>(val_fraction * 100)) +
                            "% held out for validation, each part needs at least " + std::to_string(need) +
                            " bytes (sequence length + 1)");
  return d;
}

void ByteDataset::window(size_t start, int32_t* inputs, int32_t* targets) const {
  for (int t = 0; t < T_; ++t) {
    inputs[t] = bytes_[start + static_cast<size_t>(t)];
    targets[t] = bytes_[start + static_cast<size_t>(t) + 1];
  }
}

void ByteDataset::train_batch(int64_t step, int B, int32_t* inputs, int32_t* targets, int first_row) const {
  const size_t span = split_ - static_cast<size_t>(T_);  // start positions 0 .. split_ - T - 1
  for (int b = 0; b < B; ++b) {
    const uint64_t row = static_cast<uint64_t>(first_row + b);
    const uint64_t r = mix(seed_ ^ mix(static_cast<uint64_t>(step) * 1024 + row + (row >> 10) * (uint64_t{1} << 40)));
    window(r % span, inputs + static_cast<size_t>(b) * T_, targets + static_cast<size_t>(b) * T_);
  }
}

void ByteDataset::val_batch(int index, int B, int32_t* inputs, int32_t* targets, int first_row, int batch_rows) const {
  const size_t span = bytes_.size() - split_ - static_cast<size_t>(T_);
  const size_t rows = static_cast<size_t>(batch_rows > 0 ? batch_rows : B);
  for (int b = 0; b < B; ++b) {
    const size_t k = static_cast<size_t>(index) * rows + static_cast<size_t>(first_row + b);
    window(split_ + (k * 7919 * static_cast<size_t>(T_)) % span, inputs + static_cast<size_t>(b) * T_,
           targets + static_cast<size_t>(b) * T_);
  }
}

Status write_default_corpus(const std::string& path, size_t bytes) {
  static const char* const kSubjects[] = {"the engine", "a chunk",    "the planner", "every rank", "the optimizer",
                                          "a gradient", "the device", "the host",    "a worker",   "the model"};
  static const char* const kVerbs[] = {"moves",    "reads",  "writes", "updates", "fetches",
                                       "releases", "checks", "keeps",  "sends",   "plans"};
  static const char* const kObjects[] = {"the params",     "its moments", "the master weights", "a bucket",
                                         "the next layer", "every shard", "the loss scale",     "a checkpoint",
                                         "the trace",      "its budget"};
  static const char* const kTails[] = {" before the step",
                                       " after the fetch",
                                       " on the device",
                                       " to the disk",
                                       " in the background",
                                       " ahead of need",
                                       "",
                                       "",
                                       " again",
                                       " at once"};
  std::string out;
  out.reserve(bytes + 128);
  uint64_t s = 12345;
  int sentence = 0;
  while (out.size() < bytes) {
    s = mix(s);
    const char* subj = kSubjects[s % 10];
    std::string line = subj;
    line[0] = static_cast<char>(line[0] - 'a' + 'A');
    line += std::string(" ") + kVerbs[(s >> 8) % 10] + " " + kObjects[(s >> 16) % 10] + kTails[(s >> 24) % 10];
    line += (s >> 32) % 5 == 0 ? "?" : ".";
    line += ++sentence % 6 == 0 ? "\n" : " ";
    out += line;
  }
  return fs::write_file_atomic(path, out);
}

}  // namespace strata::train
