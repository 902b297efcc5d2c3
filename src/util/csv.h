// RFC 4180 CSV records, one at a time (ml-selfcond's expertise.csv and concept_list.csv, as
// pandas writes them: fields quoted when they hold a comma, quote or newline, quotes doubled).
// Memory is one record: a record with more fields than the caller allows is an error as soon as
// it is seen (a 50 MB row of commas costs nothing). Errors name the line.
#ifndef SELFCOND_UTIL_CSV_H_
#define SELFCOND_UTIL_CSV_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace selfcond {

class CsvReader {
 public:
  explicit CsvReader(std::string_view text) : text_(text) {}
  int line() const { return line_; }  // of the next record's start (1-based)
  // The next non-empty record into *fields (false at the end of the text); more than
  // max_fields fields, an unterminated quote or text after a closing quote is an error.
  absl::StatusOr<bool> Next(std::vector<std::string>* fields, size_t max_fields);

 private:
  std::string_view text_;
  size_t i_ = 0;
  int line_ = 1;
};

}  // namespace selfcond

#endif  // SELFCOND_UTIL_CSV_H_
