// Subcommands of the fedsplit executable. Each parses its own arguments and returns an exit code;
// errors are thrown as fedsplit::Error and printed by main as one line.
#pragma once
#include <string>
#include <vector>

namespace fedsplit::cli {

using Args = std::vector<std::string>;

int run(const Args& args);            ///< fedsplit run [RECIPE] [--section.key=value ...] [--resume]
int data(const Args& args);           ///< fedsplit data prepare --corpus C --out F.h5 ...
int tokenizer(const Args& args);      ///< fedsplit tokenizer train|encode ...
int logits(const Args& args);         ///< fedsplit logits --model DIR --input ids.safetensors --out F
int eval(const Args& args);           ///< fedsplit eval --model M --data D
int peft(const Args& args);           ///< fedsplit peft merge --model M --adapter A --out DIR
int report(const Args& args);         ///< fedsplit report RUN_DIR [--out FILE]
int plan(const Args& args);           ///< fedsplit plan split --model M --profile devices.ini ...
int export_model(const Args& args);   ///< fedsplit export gguf|hf --model M --out DIR ...
int icae(const Args& args);
int serve(const Args& args);          ///< fedsplit serve --manifest M: stdin prompts through the export's pipeline
int generate(const Args& args);       ///< fedsplit generate --model M.gguf --prompt TEXT | --prompts FILE           ///< fedsplit icae compress|decode --model M --encoder E ...

}  // namespace fedsplit::cli
