#include "gguf/ggml_types.h"

#include <array>
#include <cctype>
#include <stdexcept>

namespace orcd {
namespace {

constexpr std::array kTraits{
    GgmlTypeTraits{GgmlType::F32, "F32", 1, 4},
    GgmlTypeTraits{GgmlType::F16, "F16", 1, 2},
    GgmlTypeTraits{GgmlType::Q4_0, "Q4_0", 32, 18},
    GgmlTypeTraits{GgmlType::Q4_1, "Q4_1", 32, 20},
    GgmlTypeTraits{GgmlType::Q5_0, "Q5_0", 32, 22},
    GgmlTypeTraits{GgmlType::Q5_1, "Q5_1", 32, 24},
    GgmlTypeTraits{GgmlType::Q8_0, "Q8_0", 32, 34},
    GgmlTypeTraits{GgmlType::Q8_1, "Q8_1", 32, 36},
    GgmlTypeTraits{GgmlType::Q2_K, "Q2_K", 256, 84},
    GgmlTypeTraits{GgmlType::Q3_K, "Q3_K", 256, 110},
    GgmlTypeTraits{GgmlType::Q4_K, "Q4_K", 256, 144},
    GgmlTypeTraits{GgmlType::Q5_K, "Q5_K", 256, 176},
    GgmlTypeTraits{GgmlType::Q6_K, "Q6_K", 256, 210},
    GgmlTypeTraits{GgmlType::Q8_K, "Q8_K", 256, 292},
    GgmlTypeTraits{GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66},
    GgmlTypeTraits{GgmlType::IQ2_XS, "IQ2_XS", 256, 74},
    GgmlTypeTraits{GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98},
    GgmlTypeTraits{GgmlType::IQ1_S, "IQ1_S", 256, 50},
    GgmlTypeTraits{GgmlType::IQ4_NL, "IQ4_NL", 32, 18},
    GgmlTypeTraits{GgmlType::IQ3_S, "IQ3_S", 256, 110},
    GgmlTypeTraits{GgmlType::IQ2_S, "IQ2_S", 256, 82},
    GgmlTypeTraits{GgmlType::IQ4_XS, "IQ4_XS", 256, 136},
    GgmlTypeTraits{GgmlType::I8, "I8", 1, 1},
    GgmlTypeTraits{GgmlType::I16, "I16", 1, 2},
    GgmlTypeTraits{GgmlType::I32, "I32", 1, 4},
    GgmlTypeTraits{GgmlType::I64, "I64", 1, 8},
    GgmlTypeTraits{GgmlType::F64, "F64", 1, 8},
    GgmlTypeTraits{GgmlType::IQ1_M, "IQ1_M", 256, 56},
    GgmlTypeTraits{GgmlType::BF16, "BF16", 1, 2},
    GgmlTypeTraits{GgmlType::TQ1_0, "TQ1_0", 256, 54},
    GgmlTypeTraits{GgmlType::TQ2_0, "TQ2_0", 256, 66},
    GgmlTypeTraits{GgmlType::MXFP4, "MXFP4", 32, 17},
};

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id) {
  for (const auto& t : kTraits)
    if (static_cast<uint32_t>(t.type) == id) return t;
  return std::nullopt;
}

const GgmlTypeTraits& ggml_traits(GgmlType type) {
  for (const auto& t : kTraits)
    if (t.type == type) return t;
  throw std::invalid_argument("unknown ggml type id " + std::to_string(static_cast<uint32_t>(type)));
}

std::string_view ggml_type_name(GgmlType t) { return ggml_traits(t).name; }

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  for (const auto& t : kTraits) {
    if (t.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(name[i])) == t.name[i];
    if (same) return t.type;
  }
  return std::nullopt;
}

}  // namespace orcd
