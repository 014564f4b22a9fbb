// The optimizers strata knows, by the names DeepSpeed configs use.
#include <cctype>

#include "src/optim/optimizer.h"

namespace strata::optim {

extern const Registration kAdamRegistration, kAdamWRegistration, kLionRegistration, kAdagradRegistration;

std::span<const Registration> registry() {
  static const Registration all[] = {kAdamRegistration, kAdamWRegistration, kLionRegistration, kAdagradRegistration};
  return all;
}

namespace {

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

std::string accepted_types() {
  std::string s;
  for (const Registration& r : registry()) s += (s.empty() ? "" : ", ") + std::string(r.type);
  return s;
}

StatusOr<const Registration*> find(std::string_view type) {
  for (const Registration& r : registry())
    if (same_name(r.type, type)) return &r;
  return invalid_argument("optimizer type \"" + std::string(type) +
                          "\" is not one strata has (accepted: " + accepted_types() + ")");
}

StatusOr<std::unique_ptr<Optimizer>> make(std::string_view type, const Hyper& h) {
  STRATA_ASSIGN_OR_RETURN(const Registration* r, find(type));
  std::unique_ptr<Optimizer> o = r->make(h);
  // The hyper-parameters are checked by the kernels' own validation at step 1 with lr as given.
  STRATA_RETURN_IF_ERROR(o->coeffs(1, h.lr, 1.0f).status());
  return o;
}

}  // namespace strata::optim
