import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import { buildRequest, takeEvents } from '@shared/rest';

test('a GET fills the path from the request and escapes it', () => {
  assert.deepEqual(buildRequest(AdminService.method.getPaymentDetail, { id: 'pay_1/../x?y' }), {
    verb: 'GET',
    url: '/admin/payments/pay_1%2F..%2Fx%3Fy',
  });
});

test('a GET sends the other fields as a query, proto field names, defaults left out', () => {
  const request = buildRequest(AdminService.method.listFailedWebhooks, {
    merchantId: 'mer_1',
    includeFailing: true,
    pageSize: 50,
  });
  assert.equal(request.verb, 'GET');
  assert.equal(request.body, undefined);
  const url = new URL(request.url, 'http://edge');
  assert.equal(url.pathname, '/admin/webhooks/failed');
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    merchant_id: 'mer_1',
    include_failing: 'true',
    page_size: '50',
  });
});

test('a body "*" POST sends the fields as JSON, minus those in the path, int64 as strings', () => {
  const request = buildRequest(AdminService.method.refundPayment, {
    paymentId: 'pay_1',
    amount: 250n,
    reason: 'duplicate',
  });
  assert.equal(request.verb, 'POST');
  assert.equal(request.url, '/admin/payments/pay_1/refund');
  assert.deepEqual(JSON.parse(request.body ?? ''), { amount: '250', reason: 'duplicate' });
});

test('a full refund sends no amount at all, never 0', () => {
  const request = buildRequest(AdminService.method.refundPayment, { paymentId: 'pay_1', amount: undefined });
  assert.deepEqual(JSON.parse(request.body ?? ''), {});
});

test('the overview stream carries no credential in its URL', () => {
  const request = buildRequest(AdminService.method.watchOverview, { merchantId: 'mer_1' });
  assert.equal(request.url, '/admin/overview:watch?merchant_id=mer_1');
});

test('SSE: complete events are taken, the partial one stays for the next chunk', () => {
  assert.deepEqual(takeEvents('data: {"a":1}\n\ndata: {"b"'), { data: ['{"a":1}'], rest: 'data: {"b"' });
  assert.deepEqual(takeEvents('data: {"b":2}\n\n'), { data: ['{"b":2}'], rest: '' });
});

test('SSE: CRLF line ends, multi-line data, comments and other fields', () => {
  const { data, rest } = takeEvents(': keepalive\r\n\r\nevent: x\r\nid: 7\r\ndata: [1,\r\ndata:2]\r\n\r\n');
  assert.deepEqual(data, ['[1,\n2]']);
  assert.equal(rest, '');
});

test('SSE: a chunk split inside the blank line between events', () => {
  const first = takeEvents('data: 1\n');
  assert.deepEqual(first, { data: [], rest: 'data: 1\n' });
  assert.deepEqual(takeEvents(first.rest + '\ndata: 2\n\n'), { data: ['1', '2'], rest: '' });
});
