"""Query: reading records back (gRPC Query/Tail/Stats/Connections) and rendering them for people."""
