// A minimal TVM RPC server for an aarch64 device emulated with qemu-user (see targets/emulator.py).
//
// It does what tvm/rpc/server.py does, without Python on the device: the RPC handshake, a work folder for
// uploads, `tvm.rpc.server.load_module`, then the runtime's own `rpc.ServerLoop`. Each session runs in a forked
// child, so a library that dies (SIGILL on an instruction the emulated core lacks) drops only its connection
// and the parent reports how the child ended. It also registers `edgetune.rpc.device`, a JSON description of
// the device, so that clients can tell an emulated device from a real one.
//
// Usage: rpc_server HOST PORT DEVICE_JSON   (PORT 0 picks a free port; the bound one is printed)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

namespace ffi = tvm::ffi;

static const int32_t kRPCMagic = 0xff271;

static bool ReadAll(int fd, void* data, size_t size) {
  for (char* p = static_cast<char*>(data); size > 0;) {
    ssize_t n = read(fd, p, size);
    if (n <= 0) return false;
    p += n, size -= n;
  }
  return true;
}

// The client sends [magic, key length, "client:KEY [-timeout=S]"]; we answer [magic, length, "server:"].
static bool Handshake(int fd, int* timeout_s) {
  int32_t magic = 0, length = 0;
  if (!ReadAll(fd, &magic, 4) || magic != kRPCMagic || !ReadAll(fd, &length, 4) || length < 0 || length > 4096)
    return false;
  std::string key(length, '\0');
  if (!ReadAll(fd, key.data(), length)) return false;
  size_t at = key.find("-timeout=");
  *timeout_s = at == std::string::npos ? 0 : std::atoi(key.c_str() + at + 9);
  const std::string reply = "server:";
  const int32_t reply_length = reply.size();
  return write(fd, &kRPCMagic, 4) == 4 && write(fd, &reply_length, 4) == 4 &&
         write(fd, reply.data(), reply.size()) == static_cast<ssize_t>(reply.size());
}

static void Serve(int fd, int timeout_s, const std::string& folder, const std::string& device_json) {
  if (timeout_s > 0) alarm(timeout_s);  // the client asked for a bounded session
  ffi::Function::SetGlobal("tvm.rpc.server.workpath",
                           ffi::Function::FromTyped([folder](ffi::String name) -> ffi::String {
                             return folder + "/" + std::string(name);
                           }));
  ffi::Function::SetGlobal("tvm.rpc.server.load_module",
                           ffi::Function::FromTyped([folder](ffi::String name) -> ffi::Module {
                             return ffi::Module::LoadFromFile(folder + "/" + std::string(name));
                           }));
  ffi::Function::SetGlobal("edgetune.rpc.device",
                           ffi::Function::FromTyped([device_json]() -> ffi::String { return device_json; }));
  ffi::Function::GetGlobalRequired("rpc.ServerLoop")(fd);
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST PORT DEVICE_JSON\n", argv[0]);
    return 2;
  }
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(std::atoi(argv[2]));
  socklen_t size = sizeof(address);
  if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1 ||
      bind(listener, reinterpret_cast<sockaddr*>(&address), size) != 0 || listen(listener, 8) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    std::perror("rpc_server: cannot listen");
    return 1;
  }
  std::printf("listening on %s:%d\n", argv[1], ntohs(address.sin_port));
  std::fflush(stdout);
  for (;;) {
    int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) continue;
    int timeout_s = 0;
    if (!Handshake(fd, &timeout_s)) {
      close(fd);
      continue;
    }
    char folder_template[] = "/tmp/edgetune-rpc-XXXXXX";  // the session's uploads
    const std::string folder = mkdtemp(folder_template);
    pid_t child = fork();
    if (child == 0) {
      close(listener);
      Serve(fd, timeout_s, folder, argv[3]);
      _exit(0);
    }
    close(fd);
    int status = 0;
    waitpid(child, &status, 0);  // one session at a time, like a board with one user
    std::filesystem::remove_all(folder);  // here, not in the child: the child may die of its library
    if (WIFSIGNALED(status)) {
      std::printf("session ended by signal %d (%s)\n", WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else {
      std::printf("session ended\n");
    }
    std::fflush(stdout);
  }
}
