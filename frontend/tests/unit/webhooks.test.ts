import assert from 'node:assert/strict';
import { test } from 'node:test';

// WebhooksPage is an Angular component: JIT-compile the framework's partially compiled pieces.
import '@angular/compiler';
import { Injector, runInInjectionContext } from '@angular/core';

import { Confirm, type ConfirmData } from '../../shared/confirm';
import { WebhooksPage } from '../../projects/dashboard/src/app/pages/webhooks';
import { Session } from '../../projects/dashboard/src/app/session';

/** The page over a list of two dead deliveries (of whatever merchant is asked); the operator cancels. */
function harness(): { page: WebhooksPage; asked: ConfirmData[]; requests: unknown[] } {
  const asked: ConfirmData[] = [];
  const requests: unknown[] = [];
  const session = {
    canMutate: () => true,
    api: async (_method: unknown, init: unknown) => {
      requests.push(init);
      return { deliveries: [{ id: 'wd_1', status: 'dead' }, { id: 'wd_2', status: 'dead' }], nextPageToken: '' };
    },
  };
  const confirm = {
    ask: async (data: ConfirmData) => {
      asked.push(data);
      return false;
    },
  };
  const injector = Injector.create({
    providers: [
      { provide: Session, useValue: session },
      { provide: Confirm, useValue: confirm },
    ],
  });
  return { page: runInInjectionContext(injector, () => new WebhooksPage()), asked, requests };
}

test('bulk replay: the dialog counts the dead deliveries listed, across all merchants', async () => {
  const { page, asked, requests } = harness();
  await page.load();
  await page.replayAll();
  assert.match(asked[0].message, /^Send 2 dead webhook deliveries across ALL merchants again/);
  assert.equal(requests.length, 1); // cancelled: nothing replayed
});

test('bulk replay: a merchant typed but not yet listed gets the bound, not the list of all merchants', async () => {
  const { page, asked } = harness();
  await page.load();
  page.merchantId = 'mer_B'; // typed without Enter: the list still shows every merchant's
  await page.replayAll();
  assert.match(asked[0].message, /^Send up to 500 dead webhook deliveries of merchant mer_B again/);
  await page.load();
  await page.replayAll();
  assert.match(asked[1].message, /^Send 2 dead webhook deliveries of merchant mer_B again/);
});
