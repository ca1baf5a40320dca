/**
 * A REST client driven by the protos themselves: each call takes a generated method descriptor,
 * reads its `google.api.http` annotation for the verb and path, and speaks proto3 JSON with the
 * proto field names (snake_case), as the Envoy edge transcodes it. So the paths, the request
 * fields and the response types all come from `protos/`; nothing is hand-copied.
 */
import {
  create,
  fromJson,
  getOption,
  toJson,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { http } from '@gen/google/api/annotations_pb';

/**
 * An error the API answered, from its `{"error": {type, code, message, param}}` body (see
 * docs/api.md and docs/errors.md), or a network failure (status 0, code `network`).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The error's code, e.g. `payment_state_invalid`. */
    readonly code: string,
    /** `invalid_request_error`, `authentication_error`, `api_error`... */
    readonly type: string = '',
    /** The parameter at fault, when one is. */
    readonly param: string = '',
  ) {
    super(message);
  }
}

export interface CallOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** For streams: called once the server has accepted the stream. */
  onOpen?: () => void;
}

interface Request {
  verb: string;
  url: string;
  body?: string;
}

/** Builds the HTTP request for a method from its `google.api.http` rule. */
export function buildRequest<I extends DescMessage>(
  method: DescMethodUnary<I, DescMessage> | DescMethodServerStreaming<I, DescMessage>,
  init: MessageInitShape<I>,
): Request {
  const rule = getOption(method, http);
  const pattern = rule.pattern;
  if (pattern.case === undefined || pattern.case === 'custom') {
    throw new Error(`${method.parent.typeName}.${method.name} has no REST binding`);
  }
  const json = toJson(method.input, create(method.input, init), {
    useProtoFieldName: true,
  }) as JsonObject;
  const path = pattern.value.replace(/\{([a-z0-9_.]+)(=[^}]*)?\}/g, (_, name: string) => {
    const value = json[name];
    delete json[name];
    return encodeURIComponent(String(value ?? ''));
  });
  const verb = pattern.case.toUpperCase();
  if (rule.body === '*') {
    return { verb, url: path, body: JSON.stringify(json) };
  }
  const query = new URLSearchParams();
  flatten('', json, query);
  const search = query.toString();
  return { verb, url: search ? `${path}?${search}` : path };
}

/** Query parameters for the fields left over from the path, nested messages as dotted names. */
function flatten(prefix: string, value: JsonValue, query: URLSearchParams): void {
  if (value === null) {
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item) => flatten(prefix, item, query));
  } else if (typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      flatten(prefix ? `${prefix}.${key}` : key, inner, query);
    }
  } else {
    query.append(prefix, String(value));
  }
}

/** Turns a non-2xx response into an ApiError, reading the API's error body. */
async function toError(response: Response): Promise<ApiError> {
  try {
    const { error } = (await response.json()) as {
      error?: { type?: string; code?: string; message?: string; param?: string };
    };
    if (error) {
      return new ApiError(
        response.status,
        error.message || `HTTP ${response.status}`,
        error.code ?? '',
        error.type ?? '',
        error.param ?? '',
      );
    }
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new ApiError(response.status, `HTTP ${response.status}`, '');
}

/** Calls a unary RPC through the edge's REST binding. */
export async function call<I extends DescMessage, O extends DescMessage>(
  method: DescMethodUnary<I, O>,
  init: MessageInitShape<I>,
  options: CallOptions = {},
): Promise<MessageShape<O>> {
  const request = buildRequest(method, init);
  let response: Response;
  try {
    response = await fetch(request.url, {
      method: request.verb,
      body: request.body,
      headers: { Accept: 'application/json', 'Content-Type': 'application/json', ...options.headers },
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') {
      throw error;
    }
    throw new ApiError(0, 'The server could not be reached. Check your connection.', 'network');
  }
  if (!response.ok) {
    throw await toError(response);
  }
  return fromJson(method.output, (await response.json()) as JsonValue, { ignoreUnknownFields: true });
}

/**
 * Opens a server-streaming RPC (Server-Sent Events through the edge) and hands each message to
 * `onMessage` until the stream ends or `signal` aborts. Resolves when the server closes it;
 * rejects on an HTTP error or a broken connection. fetch, not EventSource: it reports HTTP
 * errors, and reconnecting (with a fresh token) is the caller's policy.
 */
export async function stream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodServerStreaming<I, O>,
  init: MessageInitShape<I>,
  onMessage: (message: MessageShape<O>) => void,
  options: CallOptions = {},
): Promise<void> {
  const request = buildRequest(method, init);
  const response = await fetch(request.url, {
    headers: { Accept: 'text/event-stream', ...options.headers },
    signal: options.signal,
  });
  if (!response.ok || response.body === null) {
    throw await toError(response);
  }
  options.onOpen?.();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    const events = takeEvents(buffer + value);
    buffer = events.rest;
    for (const data of events.data) {
      onMessage(fromJson(method.output, JSON.parse(data) as JsonValue, { ignoreUnknownFields: true }));
    }
  }
}

/**
 * Splits the complete Server-Sent Events off the front of `buffer`: the `data` of each (its
 * `data:` lines joined by newlines; events without data, such as comments, are dropped) and the
 * incomplete rest, to be prefixed to the next chunk.
 */
export function takeEvents(buffer: string): { data: string[]; rest: string } {
  const data: string[] = [];
  let rest = buffer;
  let end: number;
  while ((end = rest.search(/\r?\n\r?\n/)) >= 0) {
    const frame = rest.slice(0, end);
    rest = rest.slice(end).replace(/^\r?\n\r?\n/, '');
    const text = frame
      .split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''))
      .join('\n');
    if (text) {
      data.push(text);
    }
  }
  return { data, rest };
}

/** A readable message for an error a page shows. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 403) return 'Your role does not allow this action.';
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}
