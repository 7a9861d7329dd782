// Each subcommand registers its options on the app and returns the function that runs it.
#pragma once
#include <functional>

namespace CLI {
class App;
}

namespace orcd::cli {

using Runner = std::function<int()>;

Runner add_inspect(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_synth(CLI::App& app);
Runner add_bench(CLI::App& app);

}  // namespace orcd::cli
