// `worker-orcd inspect FILE [--json]`: architecture, dimensions, tensor table, VRAM for weights.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "gguf/model_info.h"

namespace orcd::cli {

namespace {
std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string shape_str(const GgufTensor& t) {
  std::string s;
  for (size_t i = 0; i < t.dims.size(); ++i) s += (i ? " x " : "") + std::to_string(t.dims[i]);
  return s;
}
}  // namespace

Runner add_inspect(CLI::App& app) {
  struct Opts { std::string file; bool json = false; bool all_metadata = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("inspect", "Describe a GGUF model: architecture, dims, tensors, VRAM for weights");
  cmd->add_option("file", o->file, "GGUF file")->required();
  cmd->add_flag("--json", o->json, "Machine-readable output");
  cmd->add_flag("--metadata", o->all_metadata, "Also list every metadata key");
  return [o] {
    const GgufFile f = GgufFile::open(o->file);
    const ModelInfo m = describe_model(f);
    if (o->json) {
      nlohmann::json j = model_info_json(m);
      j["gguf_version"] = f.version();
      j["alignment"] = f.alignment();
      auto& tensors = j["tensors"] = nlohmann::json::array();
      for (const auto& t : f.tensors())
        tensors.push_back({{"name", t.name}, {"type", ggml_type_name(t.type)}, {"shape", t.dims}, {"bytes", t.n_bytes}, {"offset", t.file_offset}});
      if (o->all_metadata) {
        auto& md = j["metadata"] = nlohmann::json::object();
        for (const auto& [k, v] : f.metadata()) md[std::string(k)] = v.to_display();
      }
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    fmt::print("file          {} (GGUF v{}, {})\n", m.path, f.version(), human_bytes(f.file_size()));
    fmt::print("architecture  {}{}\n", m.architecture.empty() ? "(none)" : m.architecture, m.name.empty() ? "" : "  (" + m.name + ")");
    if (m.n_layers)
      fmt::print("dims          layers {}  embd {}  heads {}/{} (kv)  head_dim {}  ffn {}  ctx {}  vocab {}\n", m.n_layers, m.n_embd,
                 m.n_heads, m.n_kv_heads, m.head_dim, m.n_ff, m.context_length, m.vocab_size);
    if (!m.tokenizer_model.empty()) fmt::print("tokenizer     {} ({} tokens)\n", m.tokenizer_model, m.vocab_size);
    if (o->all_metadata)
      for (const auto& [k, v] : f.metadata()) fmt::print("  {:<44} {}\n", k, v.to_display());
    if (!f.tensors().empty()) {
      fmt::print("\n{:<36} {:<7} {:>24} {:>12}\n", "tensor", "type", "shape", "bytes");
      for (const auto& t : f.tensors())
        fmt::print("{:<36} {:<7} {:>24} {:>12}\n", t.name, ggml_type_name(t.type), shape_str(t), t.n_bytes);
    }
    fmt::print("\nparameters    {:.3f} B\n", static_cast<double>(m.n_params) / 1e9);
    fmt::print("weights       {} in {} tensors", human_bytes(m.weight_bytes), m.n_tensors);
    for (const auto& [type, bytes] : m.bytes_by_type) fmt::print("  {} {}", type, human_bytes(bytes));
    fmt::print("\nVRAM weights  {} ({} bytes; KV cache, workspace and logits come on top)\n", human_bytes(m.weight_vram_bytes),
               m.weight_vram_bytes);
    return 0;
  };
}

}  // namespace orcd::cli
