import assert from 'node:assert/strict';
import { test } from 'node:test';

// Session is an Angular service: JIT-compile the framework's partially compiled pieces.
import '@angular/compiler';
import { Injector, runInInjectionContext } from '@angular/core';
import { Router } from '@angular/router';

import { AccountService } from '../../gen/paymesh/admin/v1/account_pb';
import { PaymentService } from '../../gen/paymesh/payment/v1/payment_pb';
import { Session } from '../../projects/merchant/src/app/session';

interface Sent {
  url: string;
  method: string;
  headers: Record<string, string>;
}

/** A Session over a stubbed fetch that answers `answers` in turn and records each request. */
function harness(answers: { status: number; body: unknown }[]): { session: Session; sent: Sent[]; navigated: unknown[] } {
  const sent: Sent[] = [];
  const navigated: unknown[] = [];
  globalThis.fetch = (async (url: string, init: RequestInit) => {
    sent.push({ url, method: init.method ?? 'GET', headers: init.headers as Record<string, string> });
    const answer = answers.shift() ?? { status: 500, body: {} };
    return new Response(JSON.stringify(answer.body), { status: answer.status });
  }) as typeof fetch;
  const router = { url: '/payments', navigate: async (...args: unknown[]) => navigated.push(args) };
  const injector = Injector.create({ providers: [{ provide: Router, useValue: router }] });
  return { session: runInInjectionContext(injector, () => new Session()), sent, navigated };
}

const SIGNED_IN = {
  session_token: 'tok_1',
  user: { id: 'usr_1', email: 'dev@example.com', role: 'developer' },
  merchant: { id: 'mer_1', name: 'Mugs' },
};

test('merchant session: calls carry the bearer token, the mode and the idempotency key given', async () => {
  const { session, sent } = harness([
    { status: 200, body: SIGNED_IN },
    { status: 200, body: { payments: [] } },
    { status: 200, body: { id: 're_1' } },
  ]);
  await session.signIn('dev@example.com', 'pw');
  assert.equal(session.role(), 'developer');
  assert.ok(session.canDevelop() && !session.isAdmin());
  assert.equal(sent[0].headers['Authorization'], undefined); // signing in sends no credentials

  session.mode.set('live');
  await session.api(PaymentService.method.listPayments, {});
  assert.equal(sent[1].headers['Authorization'], 'Bearer tok_1');
  assert.equal(sent[1].headers['Paymesh-Mode'], 'live');
  assert.equal(sent[1].headers['Idempotency-Key'], undefined);

  await session.api(PaymentService.method.createRefund, { paymentId: 'pay_1' }, { idempotencyKey: 'k-1' });
  assert.equal(sent[2].headers['Idempotency-Key'], 'k-1');
});

test('merchant session: a viewer can do nothing; signing in again starts in test mode', async () => {
  const { session } = harness([
    { status: 200, body: { ...SIGNED_IN, user: { ...SIGNED_IN.user, role: 'viewer' } } },
  ]);
  session.mode.set('live');
  await session.signIn('v@example.com', 'pw');
  assert.equal(session.mode(), 'test');
  assert.ok(!session.canDevelop() && !session.isAdmin());
});

test('merchant session: a 401 forgets the session and asks to sign in, back to the same page', async () => {
  const { session, navigated } = harness([
    { status: 200, body: SIGNED_IN },
    { status: 401, body: { error: { code: 'unauthenticated', message: 'session expired' } } },
  ]);
  await session.signIn('dev@example.com', 'pw');
  await assert.rejects(session.api(AccountService.method.getAccount, {}), /session expired/);
  assert.equal(session.signedIn(), false);
  assert.deepEqual(navigated, [[['/login'], { queryParams: { expired: 1, next: '/payments' } }]]);
});
