#include "storage/storage_faults.h"

#include <string>
#include <utility>

#include "storage/fault_file_system.h"

namespace attnsearch {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view BaseName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool InGroup(StorageFaults::Files files, std::string_view fname) {
  const std::string_view base = BaseName(fname);
  switch (files) {
    case StorageFaults::Files::kAll:
      return true;
    case StorageFaults::Files::kWal:
      return EndsWith(base, ".log");
    case StorageFaults::Files::kTables:
      return EndsWith(base, ".sst") || EndsWith(base, ".blob");
    case StorageFaults::Files::kManifest:
      return base.rfind("MANIFEST-", 0) == 0 || base.rfind("OPTIONS-", 0) == 0 ||
             base == "CURRENT" || EndsWith(base, ".dbtmp");
  }
  return false;
}

// Appends fail after writing half of their bytes: a torn write.
rocksdb::IOStatus TornAppend(rocksdb::FSWritableFile* target, const rocksdb::Slice& data,
                             const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg,
                             StorageFaults::Kind kind) {
  target->Append(rocksdb::Slice(data.data(), data.size() / 2), options, dbg).PermitUncheckedError();
  if (kind == StorageFaults::Kind::kDiskFull) {
    return rocksdb::IOStatus::NoSpace("injected fault");
  }
  return rocksdb::IOStatus::IOError("Input/output error (injected fault)");
}

class FaultyWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultyWritableFile(std::unique_ptr<rocksdb::FSWritableFile> file, std::string fname,
                     std::shared_ptr<StorageFaults> faults)
      : FSWritableFileOwnerWrapper(std::move(file)),
        fname_(std::move(fname)),
        faults_(std::move(faults)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kAppend, fname_)) {
      return TornAppend(target(), data, options, dbg, faults_->armed());
    }
    return target()->Append(data, options, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kAppend, fname_)) {
      return TornAppend(target(), data, options, dbg, faults_->armed());
    }
    return target()->Append(data, options, info, dbg);
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kAppend, fname_)) return Failed();
    return target()->PositionedAppend(data, offset, options, dbg);
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kAppend, fname_)) return Failed();
    return target()->PositionedAppend(data, offset, options, info, dbg);
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kSync, fname_)) return Failed();
    return target()->Sync(options, dbg);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kSync, fname_)) return Failed();
    return target()->Fsync(options, dbg);
  }
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override {
    if (faults_->ShouldFail(StorageFaults::Op::kSync, fname_)) return Failed();
    return target()->RangeSync(offset, nbytes, options, dbg);
  }

 private:
  rocksdb::IOStatus Failed() const {
    if (faults_->armed() == StorageFaults::Kind::kDiskFull) {
      return rocksdb::IOStatus::NoSpace("injected fault");
    }
    return rocksdb::IOStatus::IOError("Input/output error (injected fault)");
  }

  const std::string fname_;
  const std::shared_ptr<StorageFaults> faults_;
};

class FaultyFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FaultyFileSystem(std::shared_ptr<rocksdb::FileSystem> base, std::shared_ptr<StorageFaults> faults)
      : FileSystemWrapper(std::move(base)), faults_(std::move(faults)) {}

  static const char* kClassName() { return "AttnFaultyFileSystem"; }
  const char* Name() const override { return kClassName(); }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->NewWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReopenWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReuseWritableFile(fname, old_fname, options, result, dbg), result);
  }

 private:
  rocksdb::IOStatus Wrap(const std::string& fname, rocksdb::IOStatus opened,
                         std::unique_ptr<rocksdb::FSWritableFile>* result) {
    if (!opened.ok()) return opened;
    if (faults_->ShouldFail(StorageFaults::Op::kCreate, fname)) {
      result->reset();
      return rocksdb::IOStatus::NoSpace("injected fault");
    }
    *result = std::make_unique<FaultyWritableFile>(std::move(*result), fname, faults_);
    return opened;
  }

  const std::shared_ptr<StorageFaults> faults_;
};

}  // namespace

bool StorageFaults::ShouldFail(Op op, std::string_view fname) {
  const Kind kind = armed();
  if (kind == Kind::kNone) return false;
  bool fails = false;
  switch (op) {
    case Op::kAppend:
      fails = kind == Kind::kWriteError || kind == Kind::kDiskFull;
      break;
    case Op::kSync:
      fails = kind == Kind::kSyncError;
      break;
    case Op::kCreate:
      fails = kind == Kind::kDiskFull;
      break;
  }
  if (!fails || !InGroup(static_cast<Files>(files_.load()), fname)) return false;
  failures_.fetch_add(1);
  return true;
}

std::shared_ptr<rocksdb::FileSystem> WrapWithFaults(std::shared_ptr<rocksdb::FileSystem> base,
                                                    std::shared_ptr<StorageFaults> faults) {
  return std::make_shared<FaultyFileSystem>(std::move(base), std::move(faults));
}

}  // namespace attnsearch
