// `worker-orcd tokenize --model FILE (--text T | --file F) [--json] [--no-bos]`
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace orcd::cli {

Runner add_tokenize(CLI::App& app) {
  struct Opts { std::string model, text, file; bool json = false, no_bos = false, no_special = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text, using the tokenizer stored in a GGUF file");
  cmd->add_option("--model,-m", o->model, "GGUF file with tokenizer metadata (a vocabulary-only file works)")->required();
  auto* text = cmd->add_option("--text,-t", o->text, "Text to tokenize");
  auto* file = cmd->add_option("--file,-f", o->file, "Read the text from this file (bytes as they are)");
  text->excludes(file);
  cmd->add_flag("--json", o->json, "Print a JSON array");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS even if the model asks for it");
  cmd->add_flag("--no-special", o->no_special, "Tokenize special-token text (e.g. <|im_start|>) as plain text");
  return [o, text, file] {
    if (!*text && !*file) throw std::runtime_error("tokenize needs --text or --file");
    std::string input = o->text;
    if (*file) {
      std::ifstream in(o->file, std::ios::binary);
      if (!in) throw std::runtime_error("cannot read " + o->file);
      std::ostringstream ss;
      ss << in.rdbuf();
      input = ss.str();
    }
    const GgufFile f = GgufFile::open(o->model);
    const Tokenizer tok = Tokenizer::from_gguf(f);
    EncodeOptions eo;
    if (o->no_bos) eo.add_bos = false;
    eo.parse_special = !o->no_special;
    const auto ids = tok.encode(input, eo);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json(ids).dump());
    } else {
      fmt::print("{}\n", fmt::join(ids, " "));
    }
    return 0;
  };
}

}  // namespace orcd::cli
