import { inject } from '@angular/core';
import { Router, type CanActivateFn, type Routes } from '@angular/router';

import { Session } from './session';
import { Shell } from './shell';

/** Lets signed-in operators through; sends others to sign in, and back here afterwards. */
const signedIn: CanActivateFn = (_route, state) =>
  inject(Session).signedIn() || inject(Router).createUrlTree(['/login'], { queryParams: { next: state.url } });

export const routes: Routes = [
  { path: 'login', loadComponent: () => import('./pages/login').then((m) => m.LoginPage), title: 'Sign in · paymesh' },
  {
    path: '',
    component: Shell,
    canActivate: [signedIn],
    children: [
      { path: '', pathMatch: 'full', redirectTo: 'overview' },
      { path: 'overview', loadComponent: () => import('./pages/overview').then((m) => m.OverviewPage), title: 'Overview · paymesh' },
      { path: 'payments', loadComponent: () => import('./pages/payments').then((m) => m.PaymentsPage), title: 'Payments · paymesh' },
      { path: 'payments/:id', loadComponent: () => import('./pages/payment-detail').then((m) => m.PaymentDetailPage), title: 'Payment · paymesh' },
      { path: 'disputes', loadComponent: () => import('./pages/disputes').then((m) => m.DisputesPage), title: 'Disputes · paymesh' },
      { path: 'payouts', loadComponent: () => import('./pages/payouts').then((m) => m.PayoutsPage), title: 'Payouts · paymesh' },
      { path: 'webhooks', loadComponent: () => import('./pages/webhooks').then((m) => m.WebhooksPage), title: 'Webhooks · paymesh' },
      { path: 'merchants', loadComponent: () => import('./pages/merchants').then((m) => m.MerchantsPage), title: 'Merchants · paymesh' },
      { path: 'merchants/:id', loadComponent: () => import('./pages/merchant-detail').then((m) => m.MerchantDetailPage), title: 'Merchant · paymesh' },
      { path: 'reconciliation', loadComponent: () => import('./pages/reconciliation').then((m) => m.ReconciliationPage), title: 'Reconciliation · paymesh' },
      { path: 'audit', loadComponent: () => import('./pages/audit').then((m) => m.AuditPage), title: 'Audit log · paymesh' },
    ],
  },
  { path: '**', redirectTo: '' },
];
