"""A fake model for the OpenAI Agents SDK: the SDK's Model interface, canned answers, no network.

It answers from what it is given, so a test can tell what history the SDK sent it:

- a user message mentioning the weather: reasoning, then a call of the `get_weather` tool;
- the tool's output: an assistant message quoting it;
- anything else: an assistant message that quotes the first user message it was sent and
  counts the input items ("first: <text>; items: <n>"), i.e. what the session gave back.

Every call's input is kept in `calls` (as plain JSON values), for assertions.
"""

import json

from agents import Usage
from agents.items import ModelResponse
from agents.models.interface import Model
from openai.types.responses import (Response, ResponseCompletedEvent, ResponseFunctionToolCall,
                                    ResponseOutputMessage, ResponseOutputText,
                                    ResponseReasoningItem)
from openai.types.responses.response_reasoning_item import Summary


def text_of(item):
    """The text of an input message item (a plain string, or its content parts joined)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if isinstance(part, dict))


class FakeModel(Model):
    def __init__(self, name="fake-model"):
        self.name = name
        self.calls = []
        self.responses = 0

    def answer(self, input):
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.calls.append(json.loads(json.dumps(items)))
        self.responses += 1
        n = self.responses
        last = items[-1]
        if last.get("type") == "function_call_output":
            return [message("Forecast: %s" % last["output"], "msg_%d" % n)]
        users = [item for item in items if item.get("role") == "user"]
        if "weather" in text_of(last).lower():
            return [
                ResponseReasoningItem(
                    id="rs_%d" % n, type="reasoning",
                    summary=[Summary(type="summary_text", text="The user wants the weather: "
                                     "call get_weather for Paris.")]),
                ResponseFunctionToolCall(
                    id="fc_%d" % n, call_id="call_%d" % n, type="function_call",
                    name="get_weather", arguments=json.dumps({"city": "Paris"}),
                    status="completed"),
            ]
        return [message("first: %s; items: %d" % (text_of(users[0]) if users else "",
                                                    len(items)), "msg_%d" % n)]

    async def get_response(self, system_instructions, input, model_settings, tools,
                           output_schema, handoffs, tracing, *, previous_response_id=None,
                           conversation_id=None, prompt=None, **kwargs):
        return ModelResponse(output=self.answer(input),
                             usage=Usage(requests=1, input_tokens=10, output_tokens=5,
                                         total_tokens=15),
                             response_id="resp_%d" % (self.responses + 1))

    async def stream_response(self, system_instructions, input, model_settings, tools,
                              output_schema, handoffs, tracing, *, previous_response_id=None,
                              conversation_id=None, prompt=None, **kwargs):
        output = self.answer(input)
        response = Response(id="resp_%d" % self.responses, created_at=0, model=self.name,
                            object="response", output=output, tool_choice="auto", tools=[],
                            top_p=None, parallel_tool_calls=False, status="completed")
        yield ResponseCompletedEvent(type="response.completed", response=response,
                                     sequence_number=0)


def message(text, item_id):
    return ResponseOutputMessage(
        id=item_id, type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])])
