import assert from 'node:assert/strict';
import { test } from 'node:test';

import { formatMoney, minorDigits, parseMajor, toDecimalString, toMajorNumber } from '../../shared/money';

test('minor digits come from the currency: JPY 0, EUR 2, KWD 3', () => {
  assert.equal(minorDigits('JPY'), 0);
  assert.equal(minorDigits('EUR'), 2);
  assert.equal(minorDigits('KWD'), 3);
});

test('decimal strings are exact, padded and signed', () => {
  assert.equal(toDecimalString(12345n, 2), '123.45');
  assert.equal(toDecimalString(5n, 2), '0.05');
  assert.equal(toDecimalString(-5n, 3), '-0.005');
  assert.equal(toDecimalString(1200n, 0), '1200');
  // Beyond 2^53 a float would round; the string must not.
  assert.equal(toDecimalString(9007199254740993n, 2), '90071992547409.93');
});

test('formatting uses the currency exponent and never a float', () => {
  assert.equal(formatMoney(12345n, 'EUR', 'en-US'), '€123.45');
  assert.equal(formatMoney(1200n, 'JPY', 'en-US'), '¥1,200');
  assert.equal(formatMoney('1500', 'KWD', 'en-US'), 'KWD\u00a01.500');
  assert.equal(formatMoney(9007199254740993n, 'USD', 'en-US'), '$90,071,992,547,409.93');
  assert.equal(formatMoney(42n, ''), '42');
  assert.equal(toMajorNumber(250n, 'EUR'), 2.5);
});

test('typed amounts parse into minor units; too many decimals or junk is null', () => {
  assert.equal(parseMajor('12.50', 'EUR'), 1250n);
  assert.equal(parseMajor(' 3 ', 'EUR'), 300n);
  assert.equal(parseMajor('3,1', 'EUR'), 310n);
  assert.equal(parseMajor('1200', 'JPY'), 1200n);
  assert.equal(parseMajor('1.5', 'JPY'), null);
  assert.equal(parseMajor('1.2345', 'KWD'), null);
  assert.equal(parseMajor('1.234', 'KWD'), 1234n);
  assert.equal(parseMajor('-1', 'EUR'), null);
  assert.equal(parseMajor('1e3', 'EUR'), null);
  assert.equal(parseMajor('', 'EUR'), null);
});
