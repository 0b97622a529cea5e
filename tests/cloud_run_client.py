"""Google's own Cloud Run client (google-cloud-run, REST transport) against the simulation.

Usage: cloud_run_client.py ENDPOINT PROJECT REGION SERVICE IMAGE
The bearer token comes from the environment (SIM_RUN_TOKEN), never from the command line.
Prints one JSON line of what it read; exits non-zero on any mismatch.
"""

import json
import os
import sys

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2


def main() -> None:
    endpoint, project, region, service_id, image = sys.argv[1:6]
    metadata = [("authorization", "Bearer " + os.environ["SIM_RUN_TOKEN"])]
    options = ClientOptions(api_endpoint=endpoint)
    services = run_v2.ServicesClient(
        credentials=AnonymousCredentials(), transport="rest", client_options=options
    )
    revisions = run_v2.RevisionsClient(
        credentials=AnonymousCredentials(), transport="rest", client_options=options
    )
    parent = f"projects/{project}/locations/{region}"
    name = f"{parent}/services/{service_id}"

    service = services.get_service(name=name, metadata=metadata)
    assert service.name == name, service.name
    assert service.template.containers[0].image == image, service.template.containers
    assert service.etag, "an etag"
    assert service.generation >= 1, service.generation
    assert service.uid, "a uid"
    ready = run_v2.Condition.State.CONDITION_SUCCEEDED
    assert service.terminal_condition.state == ready, service.terminal_condition
    assert service.latest_ready_revision == service.latest_created_revision
    assert service.create_time.year >= 2024, service.create_time
    assert service.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL, service.ingress

    listed = list(services.list_services(parent=parent, metadata=metadata))
    assert [s.name for s in listed] == [name], [s.name for s in listed]

    revision_list = list(revisions.list_revisions(parent=name, metadata=metadata))
    assert revision_list and revision_list[0].name == service.latest_ready_revision
    assert revision_list[0].conditions[0].state == ready

    # An update: the client sends the whole service back (output fields and etag too) and
    # reads the long-running operation it gets. (Polling it would go through the operations
    # client, which sends no per-call headers, so the anonymous client could not.)
    service.labels["touched-by"] = "python"
    operation = services.update_service(service=service, metadata=metadata)
    assert operation.operation.name.startswith(parent + "/operations/"), operation.operation
    updated = services.get_service(name=name, metadata=metadata)
    assert updated.labels["touched-by"] == "python", updated.labels
    assert updated.generation == service.generation + 1, updated.generation

    print(
        json.dumps(
            {
                "name": service.name,
                "image": service.template.containers[0].image,
                "listed": [s.name for s in listed],
                "revisions": [r.name for r in revision_list],
                "updated_generation": updated.generation,
            }
        )
    )


if __name__ == "__main__":
    main()
