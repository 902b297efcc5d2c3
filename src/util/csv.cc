#include "util/csv.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace selfcond {

absl::StatusOr<bool> CsvReader::Next(std::vector<std::string>* fields, size_t max_fields) {
  fields->clear();
  std::string field;
  bool any = false;  // the current record has content
  auto push = [&]() -> absl::Status {
    if (fields->size() >= max_fields) {
      return absl::InvalidArgumentError(
          absl::StrCat("CSV: line ", line_, " has more than ", max_fields, " fields"));
    }
    fields->push_back(std::move(field));
    field.clear();
    return absl::OkStatus();
  };
  while (i_ < text_.size()) {
    const char c = text_[i_];
    if (c == '"' && field.empty()) {
      const int start_line = line_;
      ++i_;
      for (;;) {
        if (i_ >= text_.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("CSV: unterminated quoted field starting on line ", start_line));
        }
        if (text_[i_] == '"') {
          if (i_ + 1 < text_.size() && text_[i_ + 1] == '"') {
            field += '"';
            i_ += 2;
            continue;
          }
          ++i_;
          break;
        }
        if (text_[i_] == '\n') ++line_;
        field += text_[i_++];
      }
      any = true;
      if (i_ < text_.size() && text_[i_] != ',' && text_[i_] != '\n' && text_[i_] != '\r') {
        return absl::InvalidArgumentError(
            absl::StrCat("CSV: unexpected character after a quoted field on line ", line_));
      }
      continue;
    }
    if (c == ',') {
      if (auto st = push(); !st.ok()) return st;
      any = true;
      ++i_;
      continue;
    }
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i_ + 1 < text_.size() && text_[i_ + 1] == '\n') ++i_;
      ++i_;
      ++line_;
      if (any || !field.empty()) {
        if (auto st = push(); !st.ok()) return st;
        return true;
      }
      continue;  // an empty line
    }
    field += c;
    any = true;
    ++i_;
  }
  if (any || !field.empty()) {
    if (auto st = push(); !st.ok()) return st;
    return true;
  }
  return false;
}

}  // namespace selfcond
