//===- Error.cpp - kvarn's errors: a status and a message -----------------===//

#include "kvarn/Support/Error.h"

#include <cstdio>
#include <cstdlib>

using namespace kvarn;

kvarn_status_t kvarn::consumeError(Error err, std::string &message) {
  message = err.message();
  return err.status();
}

Error kvarn::withContext(Error err, std::string_view context) {
  if (!err)
    return err;
  return Error(err.status(), err.message() + " (" + std::string(context) + ")");
}

void kvarn::cantFail(Error err) {
  if (!err)
    return;
  std::fprintf(stderr, "kvarn: an operation that cannot fail failed: %s\n",
               err.message().c_str());
  std::abort();
}
