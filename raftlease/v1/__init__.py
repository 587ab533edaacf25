"""Generated gRPC/protobuf code for the ``raftlease.v1`` wire API: do not edit.

Everything else here comes from ``protos/raftlease/v1/*.proto`` via ``make proto`` and is
checked by ``make verify-proto``. Import protobuf only from ``raftlease.codec``, the servers and
the clients, never from the core.
"""
