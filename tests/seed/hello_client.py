#!/usr/bin/env python
# The seed article's client, verbatim except for how the channel is created (marked below):
# a TLS channel that trusts $SEED_CA and sends $SEED_TOKEN, instead of an insecure one.

import logging
import os  # added: the secure channel's settings come from the environment

import grpc
from rpc_package.helloworld_pb2 import HelloRequest
from rpc_package.helloworld_pb2_grpc import HelloWorldServiceStub


def run():
    # 使用with语法保证channel自动close
    # changed: was grpc.insecure_channel('localhost:50000')
    with grpc.secure_channel(
        os.environ["SEED_TARGET"],
        grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(open(os.environ["SEED_CA"], "rb").read()),
            grpc.access_token_call_credentials(os.environ["SEED_TOKEN"]),
        ),
    ) as channel:
        # 客户端通过stub来实现rpc通信
        stub = HelloWorldServiceStub(channel)

        # 客户端必须使用定义好的类型，这里是HelloRequest类型
        response = stub.SayHello(HelloRequest(name="eric"))
    print("hello client received: " + response.message)


if __name__ == "__main__":
    logging.basicConfig()
    run()
