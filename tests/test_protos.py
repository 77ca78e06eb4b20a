import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr


def test_contracts_import_and_define_every_service():
    from avengers.v1 import embedder_pb2, gateway_pb2, model_pool_pb2, router_pb2, voter_pb2

    services = {
        embedder_pb2: "Embedder",
        router_pb2: "Router",
        model_pool_pb2: "ModelPool",
        voter_pb2: "Voter",
        gateway_pb2: "Gateway",
    }
    for module, name in services.items():
        assert module.DESCRIPTOR.services_by_name[name].full_name == f"avengers.v1.{name}"
    stream = model_pool_pb2.DESCRIPTOR.services_by_name["ModelPool"].methods_by_name["GenerateStream"]
    assert stream.server_streaming
