# Drives Framegate's OpenAI-compatible Videos API with the official `openai` package, unchanged,
# pointed at base_url; every JSON answer is also checked against the published spec
# (docs/specs/openai-videos.openapi.json) with jsonschema. Run by tests/it/openai_sdk.rs.
# argv: base_url api_key spec_path download_path; prints one JSON line of findings.
import json
import sys
import warnings

import jsonschema
import openai

warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Videos API deprecated

base_url, api_key, spec_path, download_path = sys.argv[1:5]
with open(spec_path) as f:
    spec = json.load(f)


def check(schema_name, document):
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
found = {}

# create (the SDK sends a multipart form), checked as the raw JSON the server sent
raw = client.videos.with_raw_response.create(
    prompt="a paper boat on a rainy street", model="simulator-v1", seconds="2", size="1280x720"
)
assert raw.status_code == 200, raw.status_code
check("VideoResource", raw.http_response.json())
first = raw.parse()
found["created"] = {"status": first.status, "model": first.model, "size": first.size, "seconds": first.seconds}

# retrieve
raw = client.videos.with_raw_response.retrieve(first.id)
check("VideoResource", raw.http_response.json())
assert raw.parse().id == first.id

# a bad parameter, read through the SDK's exception types
try:
    client.videos.create(prompt="too long", model="simulator-v1", seconds="60")
    raise AssertionError("a 60 s simulator video was accepted")
except openai.BadRequestError as error:
    check("ErrorResponse", error.response.json())
    found["bad_seconds"] = {"status": error.status_code, "code": error.code, "param": error.param, "type": error.type}
try:
    client.videos.create(prompt="who?", model="sora-3")
    raise AssertionError("an unknown model was accepted")
except openai.BadRequestError as error:
    found["bad_model"] = {"code": error.code, "param": error.param}
try:
    openai.OpenAI(base_url=base_url, api_key="fg_not_a_key", max_retries=0).videos.list()
    raise AssertionError("a made-up key was accepted")
except openai.AuthenticationError as error:
    check("ErrorResponse", error.response.json())
    found["bad_key"] = {"status": error.status_code}

# create_and_poll until it completes, then download the MP4
done = client.videos.create_and_poll(
    prompt="a heron over a misty lake", model="simulator/simulator-v1", seconds="2",
    size="720x1280", poll_interval_ms=200,
)
found["polled"] = {"status": done.status, "progress": done.progress, "completed_at": done.completed_at is not None}
check("VideoResource", client.videos.with_raw_response.retrieve(done.id).http_response.json())
content = client.videos.download_content(done.id)
content.write_to_file(download_path)
try:
    client.videos.download_content(done.id, variant="spritesheet")
    raise AssertionError("a spritesheet was served")
except openai.NotFoundError as error:
    check("ErrorResponse", error.response.json())
    found["spritesheet"] = {"code": error.code}

# list, one per page: the SDK follows `after` to the end
ids = [video.id for video in client.videos.list(limit=1)]
found["listed"] = ids
raw = client.videos.with_raw_response.list(limit=1, order="asc")
check("VideoListResource", raw.http_response.json())
found["first_ascending"] = raw.parse().data[0].id

# delete the finished one: gone from reads
raw = client.videos.with_raw_response.delete(done.id)
check("DeletedVideoResource", raw.http_response.json())
deleted = raw.parse()
found["deleted"] = {"id": deleted.id, "deleted": deleted.deleted}
try:
    client.videos.retrieve(done.id)
    raise AssertionError("a deleted video was still served")
except openai.NotFoundError as error:
    found["after_delete"] = {"status": error.status_code}
found["listed_after_delete"] = [video.id for video in client.videos.list()]
found["ids"] = {"first": first.id, "done": done.id}
print(json.dumps(found))
