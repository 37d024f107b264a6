// Whether the client of a request that is still being handled has gone away.
//
// cpp-httplib 0.11 (Debian 12's libcpp-httplib) gives a handler no access to its connection, and a
// non-streaming handler that waits for the engine must notice a client that disconnected (to cancel
// its generation). The connection is found once per request among this process's sockets by its
// address pair (local address and port, peer address and port: unique while the connection is open,
// which it is for as long as its handler runs), then probed without reading from it.
#pragma once
#include <string>

namespace tachyon::server {

class PeerSocket {
 public:
  // The open socket connected from remote_addr:remote_port to local_port; invalid() if none is found.
  static PeerSocket find(const std::string& remote_addr, int remote_port, int local_port);

  bool valid() const { return fd_ >= 0; }
  // True when the peer closed or reset the connection. Unread request bytes (pipelining) are not a
  // close. An invalid PeerSocket never reports a close.
  bool closed() const;

 private:
  int fd_ = -1;
};

}  // namespace tachyon::server
