//===- Error.cpp - kvarn errors carried through llvm::Error ---------------===//

#include "kvarn/Support/Error.h"

using namespace kvarn;

char KvarnError::ID = 0;

kvarn_status_t kvarn::consumeError(llvm::Error err, std::string &message) {
  kvarn_status_t status = KVARN_OK;
  message.clear();
  llvm::handleAllErrors(
      std::move(err),
      [&](const KvarnError &e) {
        if (status == KVARN_OK)
          status = e.getStatus();
        message += (message.empty() ? "" : "; ") + e.getMessage();
      },
      [&](const llvm::ErrorInfoBase &e) {
        if (status == KVARN_OK)
          status = KVARN_ERROR_INTERNAL;
        message += (message.empty() ? "" : "; ") + e.message();
      });
  return status;
}

llvm::Error kvarn::withContext(llvm::Error err, llvm::StringRef context) {
  if (!err)
    return err;
  std::string message;
  kvarn_status_t status = consumeError(std::move(err), message);
  return llvm::make_error<KvarnError>(status,
                                      message + " (" + context.str() + ")");
}
