# The generated gRPC stubs (search_pb2, search_pb2_grpc) are written here
# when the package is built (setup.py).
