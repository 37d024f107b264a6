#include "server/peer_socket.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>

namespace tachyon::server {

namespace {

// The numeric host and the port of a socket address (IPv4 or IPv6), as cpp-httplib spells them.
bool host_and_port(const sockaddr_storage& address, std::string& host, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    if (!inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text)) return false;
    port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    if (!inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text)) return false;
    port = ntohs(v6.sin6_port);
  } else {
    return false;
  }
  host = text;
  return true;
}

bool matches(int fd, const std::string& remote_addr, int remote_port, int local_port) {
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode)) return false;
  sockaddr_storage peer{}, local{};
  socklen_t peer_length = sizeof peer, local_length = sizeof local;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) return false;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) return false;
  std::string peer_host, local_host;
  int peer_port = -1, own_port = -1;
  if (!host_and_port(peer, peer_host, peer_port) || !host_and_port(local, local_host, own_port)) return false;
  return peer_port == remote_port && own_port == local_port && peer_host == remote_addr;
}

}  // namespace

PeerSocket PeerSocket::find(const std::string& remote_addr, int remote_port, int local_port) {
  PeerSocket found;
  if (remote_port < 0 || local_port < 0) return found;
  DIR* directory = opendir("/proc/self/fd");
  if (!directory) return found;
  while (const dirent* entry = readdir(directory)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(directory)) continue;
    if (matches(static_cast<int>(fd), remote_addr, remote_port, local_port)) {
      found.fd_ = static_cast<int>(fd);
      break;
    }
  }
  closedir(directory);
  return found;
}

bool PeerSocket::closed() const {
  if (fd_ < 0) return false;
  pollfd probe{fd_, POLLIN | POLLRDHUP, 0};
  if (poll(&probe, 1, 0) <= 0) return false;
  if (probe.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  if (probe.revents & POLLIN) {
    char byte;
    return recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

}  // namespace tachyon::server
