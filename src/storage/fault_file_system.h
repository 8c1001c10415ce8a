// Internal to the storage module: the RocksDB FileSystem wrapper behind
// StorageFaults (storage_faults.h).
#ifndef ATTNSEARCH_STORAGE_FAULT_FILE_SYSTEM_H_
#define ATTNSEARCH_STORAGE_FAULT_FILE_SYSTEM_H_

#include <memory>

#include "rocksdb/file_system.h"
#include "storage/storage_faults.h"

namespace attnsearch {

// `base` with every write, sync and file creation checked against `faults`.
std::shared_ptr<rocksdb::FileSystem> WrapWithFaults(std::shared_ptr<rocksdb::FileSystem> base,
                                                    std::shared_ptr<StorageFaults> faults);

}  // namespace attnsearch

#endif  // ATTNSEARCH_STORAGE_FAULT_FILE_SYSTEM_H_
